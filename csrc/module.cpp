// Python module stub: importing pgkernels._C runs the TORCH_LIBRARY
// registrations in this shared object (the ops live under torch.ops.pgkernels).
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
