"""``pgkernels`` command line: ``pgkernels demo``, ``pgkernels party ...``,
``pgkernels fl ...`` and ``pgkernels fl-sweep ...`` (the federated lab), and
``pgkernels train ...`` (private training under poisoning), and
``pgkernels flower ...`` (the Flower example: FedAvg, Flower's Krum, Krum in MPC)."""

import sys


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"demo": "pgkernels.demo", "party": "pgkernels.party", "train": "pgkernels.train.cli",
                "flower": "pgkernels.integrations.flower_example"}
    if argv and argv[0] in ("fl", "fl-sweep"):
        from .fl import cli as fl_cli

        return fl_cli.main(argv)
    if not argv or argv[0] not in commands:
        print("usage: pgkernels {demo,party,fl,fl-sweep,train,flower} [args...]", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(commands[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
