"""PTQ methods: every module in this package registers itself with ``config.register_method``
when imported; all of them are imported here, so a new method is one new file."""
import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
