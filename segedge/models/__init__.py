"""The model zoo: one module per family, each registering itself with ``@register_model``.

Adding a model is one file here: the registry imports every module in this package the first time a model is
looked up (``registry.list_models`` / ``get_spec``), so there is no import list to keep in step. Importing the
package itself imports nothing heavy: the run path (a Predictor, ``bench --onnx``) never loads torch. Import
errors are not swallowed: a broken model file fails loudly on the first lookup.
"""
