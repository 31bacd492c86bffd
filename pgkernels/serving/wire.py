"""The coordinator <-> aggregation-server message format: no pickle, a fixed schema.

One message on the wire::

    b"PGKW" | uint32 big-endian header length | header (UTF-8 JSON object) | array bytes

The header holds ``"op"``, the op's fields, and ``"arrays"``: a list of
``{"name", "dtype", "shape"}``; the raw C-order little-endian bytes of those
arrays follow in the listed order. A receiver accepts only what :data:`SCHEMA`
lists for the op it expects: every field is checked for type and range (no
extra fields, no missing required ones, no NaN/inf, booleans are not ints),
array names must match the op's patterns, dtypes are limited to ``int64``,
``uint8`` and ``float64``, and the header (``MAX_HEADER``) and the declared
array bytes (``max_bytes``, default ``PGKERNELS_MAX_MESSAGE_BYTES`` or 8 GiB)
are bounded *before* anything is allocated. Nothing received is ever
executed or unpickled: a pickle (or any other bytes) fails the magic, the JSON
parse or the schema with :class:`WireError`.

Messages (``->`` is from the coordinator, ``<-`` from a server):

* ``<- hello {version, session (32 hex), public_key (64 hex)}``: a server's
  session nonce and X25519 key. Its rank is *not* in the message: the
  coordinator reads it from the server's verified TLS certificate.
* ``-> welcome {world_size, rank}`` / ``-> refused {message}``.
* ``-> open {round, d, nodes}`` + ``boxes`` uint8 (n, 64) + ``masked`` int64
  (n, d) to server 0, ``hashes`` uint8 (n, 32) to the others.
  ``<- checked {round, bad}``.
* ``-> run {round, rule, kwargs, keep}`` + ``extra:<kwarg>`` int64 shares.
* ``-> aggregate {rule, kwargs}`` + ``updates`` int64 (n, d) + ``extra:<kwarg>``.
* ``-> discard {}``, ``-> stop {}``.
* ``<- result {stats}`` + ``out`` int64 + optional ``selection`` int64 and
  ``per_client`` int64 (n,) shares (room for a per-client validity vector).
* ``<- error {kind, message}``; kind is ``policy`` (a server refused the
  request), ``disagree`` (the servers were sent different requests),
  ``protocol`` (a malformed message) or ``internal`` (the rule raised).
"""

import json
import os
import re
import select
import struct
import time

import numpy as np

MAGIC = b"PGKW"
VERSION = 2
MAX_HEADER = 4 << 20
MAX_ARRAYS = 16
MAX_NDIM = 3
MAX_CLIENTS = 100_000
DTYPES = {"int64": np.dtype("<i8"), "uint8": np.dtype("u1"), "float64": np.dtype("<f8")}
_PREFIX = struct.Struct(">4sI")


def default_max_bytes():
    return int(os.environ.get("PGKERNELS_MAX_MESSAGE_BYTES", 8 << 30))


class WireError(ValueError):
    """A message that is not in the schema (garbage, a pickle, a wrong field, an oversized array)."""


class ConnectionClosed(ConnectionError):
    """The peer closed the connection."""


# -- field validators ---------------------------------------------------------------

def _int(lo, hi):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise WireError(f"expected an int in [{lo}, {hi}]")
        return v
    return check


def _str(maxlen, pattern=None, choices=None):
    rx = re.compile(pattern) if pattern else None

    def check(v):
        if not isinstance(v, str) or len(v) > maxlen:
            raise WireError(f"expected a string of at most {maxlen} characters")
        if rx is not None and not rx.fullmatch(v):
            raise WireError(f"string does not match {pattern}")
        if choices is not None and v not in choices:
            raise WireError(f"expected one of {sorted(choices)}")
        return v
    return check


def _int_list(maxlen, lo, hi):
    item = _int(lo, hi)

    def check(v):
        if not isinstance(v, list) or len(v) > maxlen:
            raise WireError(f"expected a list of at most {maxlen} ints")
        return [item(x) for x in v]
    return check


def _scalar(v):
    if v is None or isinstance(v, (bool, str)) and len(str(v)) <= 64:
        return v
    if isinstance(v, int) and -(2 ** 63) <= v < 2 ** 63:
        return v
    if isinstance(v, float):  # NaN/inf cannot get here: the JSON parser refuses them
        return v
    raise WireError("expected a scalar (int, float, bool, null or a string of <= 64 characters)")


def _number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise WireError("expected a number")
    return v


def _dict(maxkeys, value):
    key = _str(64, r"[A-Za-z_][A-Za-z0-9_]*")

    def check(v):
        if not isinstance(v, dict) or len(v) > maxkeys:
            raise WireError(f"expected an object with at most {maxkeys} keys")
        return {key(k): value(x) for k, x in v.items()}
    return check


_HEX16 = _str(32, r"[0-9a-f]{32}")
_HEX32 = _str(64, r"[0-9a-f]{64}")
_ROUND = _int(1, 2 ** 53)
_RULE = _str(32, r"[a-z_]{1,32}")
_KWARGS = _dict(32, _scalar)
_EXTRA = r"extra:[A-Za-z_][A-Za-z0-9_]{0,63}"

# op -> (fields: name -> (validator, required), arrays: [(name pattern, dtypes, max ndim, required)])
SCHEMA = {
    "hello": ({"version": (_int(0, 1 << 16), True), "session": (_HEX16, True), "public_key": (_HEX32, True)},
              []),
    "welcome": ({"world_size": (_int(2, 1 << 10), True), "rank": (_int(0, 1 << 10), True)}, []),
    "refused": ({"message": (_str(4096), True)}, []),
    "open": ({"round": (_ROUND, True), "d": (_int(1, 1 << 40), True),
              "nodes": (_int_list(MAX_CLIENTS, 0, 2 ** 64 - 1), True)},
             [("boxes", {"uint8"}, 2, True), ("masked", {"int64"}, 2, False), ("hashes", {"uint8"}, 2, False)]),
    "checked": ({"round": (_ROUND, True), "bad": (_int_list(MAX_CLIENTS, 0, MAX_CLIENTS), True)}, []),
    "run": ({"round": (_ROUND, True), "rule": (_RULE, True), "kwargs": (_KWARGS, True),
             "keep": (_int_list(MAX_CLIENTS, 0, MAX_CLIENTS), True)},
            [(_EXTRA, {"int64"}, 2, False)]),
    "aggregate": ({"rule": (_RULE, True), "kwargs": (_KWARGS, True)},
                  [("updates", {"int64"}, 2, True), (_EXTRA, {"int64"}, 2, False)]),
    "discard": ({}, []),
    "stop": ({}, []),
    "result": ({"stats": (_dict(32, _number), True)},
               [("out", {"int64"}, 2, True), ("selection", {"int64"}, 2, False),
                ("per_client", {"int64"}, 1, False)]),
    "error": ({"kind": (_str(16, choices={"policy", "disagree", "protocol", "internal"}), True),
               "message": (_str(65536), True)}, []),
}


class Message:
    """A received message: ``op``, ``fields`` (dict) and ``arrays`` (name -> numpy array)."""

    __slots__ = ("op", "fields", "arrays")

    def __init__(self, op, fields, arrays):
        self.op, self.fields, self.arrays = op, fields, arrays

    def __getitem__(self, k):
        return self.fields[k]

    def __repr__(self):
        return f"Message({self.op!r}, {self.fields!r}, arrays={ {k: v.shape for k, v in self.arrays.items()} })"


def _check_fields(op, fields):
    spec, _ = SCHEMA[op]
    unknown = set(fields) - set(spec)
    if unknown:
        raise WireError(f"{op!r}: unexpected fields {sorted(unknown)}")
    out = {}
    for name, (check, required) in spec.items():
        if name not in fields:
            if required:
                raise WireError(f"{op!r}: missing field {name!r}")
            continue
        try:
            out[name] = check(fields[name])
        except WireError as e:
            raise WireError(f"{op!r}.{name}: {e}") from None
    return out


def _array_spec(op, name):
    for pattern, dtypes, ndim, _ in SCHEMA[op][1]:
        if re.fullmatch(pattern, name):
            return dtypes, ndim
    raise WireError(f"{op!r}: unexpected array {name!r}")


def _check_arrays(op, decl, max_bytes):
    if not isinstance(decl, list) or len(decl) > MAX_ARRAYS:
        raise WireError(f"'arrays' must be a list of at most {MAX_ARRAYS} entries")
    out, total, seen = [], 0, set()
    for a in decl:
        if not isinstance(a, dict) or set(a) != {"name", "dtype", "shape"}:
            raise WireError("each array entry needs exactly name, dtype, shape")
        name, dtype, shape = a["name"], a["dtype"], a["shape"]
        if not isinstance(name, str) or len(name) > 80 or name in seen:
            raise WireError("array names must be distinct strings")
        seen.add(name)
        dtypes, ndim = _array_spec(op, name)
        if dtype not in dtypes:
            raise WireError(f"{op!r}: array {name!r} must be {sorted(dtypes)}, got {dtype!r}")
        if (not isinstance(shape, list) or len(shape) > min(ndim, MAX_NDIM)
                or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2 ** 40 for s in shape)):
            raise WireError(f"{op!r}: array {name!r} has an invalid shape (at most {ndim} dims)")
        nbytes = int(np.prod(shape, dtype=object)) * DTYPES[dtype].itemsize
        total += nbytes
        if total > max_bytes:
            raise WireError(f"{op!r}: arrays of more than {max_bytes} bytes")
        out.append((name, DTYPES[dtype], tuple(shape), nbytes))
    for pattern, _, _, required in SCHEMA[op][1]:
        if required and pattern not in seen:
            raise WireError(f"{op!r}: missing array {pattern!r}")
    return out


def _reject_constant(c):
    raise WireError(f"non-finite number {c} in the header")


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise WireError(f"duplicate key {k!r} in the header")
        d[k] = v
    return d


# -- encoding ---------------------------------------------------------------------------

def encode(op, fields=None, arrays=None):
    """The message as a list of byte buffers (checked against the schema, as the receiver will)."""
    if op not in SCHEMA:
        raise WireError(f"unknown op {op!r}")
    fields = _check_fields(op, dict(fields or {}))
    decl, bufs = [], []
    for name, arr in (arrays or {}).items():
        arr = np.asarray(arr)
        kind = next((k for k, dt in DTYPES.items()
                     if arr.dtype.kind == dt.kind and arr.dtype.itemsize == dt.itemsize), None)
        if kind is None:
            raise WireError(f"array {name!r}: dtype {arr.dtype} is not int64, uint8 or float64")
        arr = np.ascontiguousarray(arr, dtype=DTYPES[kind])
        decl.append({"name": name, "dtype": kind, "shape": list(arr.shape)})
        if arr.size:
            bufs.append(memoryview(arr.reshape(-1)).cast("B"))
    _check_arrays(op, decl, float("inf"))
    header = json.dumps(dict(fields, op=op, arrays=decl), separators=(",", ":"), allow_nan=False).encode()
    if len(header) > MAX_HEADER:
        raise WireError(f"header of {len(header)} bytes exceeds {MAX_HEADER}")
    return [_PREFIX.pack(MAGIC, len(header)) + header] + bufs


def send(sock, op, fields=None, arrays=None, timeout=None):
    """Send one message; ``timeout`` (s) bounds the whole send."""
    parts = encode(op, fields, arrays)
    deadline = None if timeout is None else time.monotonic() + timeout
    for p in parts:
        if deadline is not None:
            sock.settimeout(max(deadline - time.monotonic(), 1e-3))
        sock.sendall(p)


# -- decoding ---------------------------------------------------------------------------

def _recv_into(sock, view, deadline):
    got = 0
    while got < len(view):
        if deadline is None:
            sock.settimeout(None)
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out waiting for a message")
            sock.settimeout(left)
        k = sock.recv_into(view[got:], len(view) - got)
        if k == 0:
            raise ConnectionClosed("the peer closed the connection")
        got += k


def readable(sock, timeout):
    """Whether a message has started to arrive within ``timeout`` s (TLS-buffered bytes count)."""
    if getattr(sock, "pending", None) is not None and sock.pending():
        return True
    r, _, _ = select.select([sock], [], [], max(timeout, 0))
    return bool(r)


def recv(sock, expect, first_timeout=None, timeout=None, max_bytes=None):
    """Receive one message whose op is in ``expect``; :class:`WireError` for anything else.

    ``first_timeout`` bounds the wait for the first bytes (``None``: wait
    forever), ``timeout`` the rest of the message once it has started.
    """
    max_bytes = default_max_bytes() if max_bytes is None else max_bytes
    prefix = bytearray(_PREFIX.size)
    view = memoryview(prefix)
    first = None if first_timeout is None else time.monotonic() + first_timeout
    _recv_into(sock, view[:1], first)
    deadline = None if timeout is None else time.monotonic() + timeout
    _recv_into(sock, view[1:], deadline)
    magic, hlen = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise WireError("not a pgkernels message (bad magic): refusing to parse it")
    if hlen > MAX_HEADER:
        raise WireError(f"header of {hlen} bytes exceeds {MAX_HEADER}")
    raw = bytearray(hlen)
    _recv_into(sock, memoryview(raw), deadline)
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except WireError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WireError(f"header is not JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    op = header.pop("op", None)
    if op not in expect or op not in SCHEMA:
        raise WireError(f"unexpected message {op!r} (expected one of {sorted(expect)})")
    decl = _check_arrays(op, header.pop("arrays", None), max_bytes)
    fields = _check_fields(op, header)
    arrays = {}
    for name, dtype, shape, nbytes in decl:
        arr = np.empty(shape, dtype=dtype)
        if nbytes:
            _recv_into(sock, memoryview(arr.reshape(-1)).cast("B"), deadline)
        arrays[name] = arr
    return Message(op, fields, arrays)
