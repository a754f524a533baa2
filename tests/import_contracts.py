"""An import-linter contract type the built-in ones lack: a package imports only the standard library.

Registered in pyproject.toml (``[tool.importlinter] contract_types``); ``lint-imports`` runs it. The
emulator (``m3ter_provider.testing``) must run wherever Python runs, with nothing installed: this
contract fails when any of its modules imports a third-party package (``allowed_modules`` names the
exceptions: pytest, for the pytest plugin) or a module of the provider outside the package itself.
"""

from __future__ import annotations

import sys

from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


class StdlibOnlyContract(Contract):
    """Modules of ``source_modules`` (and their descendants) import only the standard library, each other,
    and ``allowed_modules`` (top-level package names, e.g. ``pytest``)."""

    type_name = "stdlib_only"

    source_modules = fields.ListField(subfield=fields.StringField())
    allowed_modules = fields.ListField(subfield=fields.StringField(), required=False, default=[])

    def check(self, graph, verbose: bool) -> ContractCheck:
        allowed = set(self.allowed_modules)
        broken: list[dict[str, object]] = []
        for package in self.source_modules:
            inside = {package, *graph.find_descendants(package)}
            for importer in sorted(inside):
                for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                    top = imported.split(".", 1)[0]
                    if imported in inside or imported.startswith(package + "."):
                        continue
                    if top in sys.stdlib_module_names or top in allowed:
                        continue
                    lines = sorted(
                        detail["line_number"]
                        for detail in graph.get_import_details(importer=importer, imported=imported)
                    )
                    broken.append({"importer": importer, "imported": imported, "lines": lines})
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for item in check.metadata["broken"]:
            lines = ", ".join(f"l.{n}" for n in item["lines"]) or "?"
            output.print_error(
                f"{item['importer']} imports {item['imported']} ({lines}): not the standard library",
                bold=False,
            )
            output.new_line()


class PrivateModulesContract(Contract):
    """A private module (``_x``) of one of ``packages`` is imported only from inside that package.

    ``m3ter_provider.operators._base`` may be imported by ``m3ter_provider.operators.m3ter``, never by
    ``m3ter_provider.sensors.m3ter``: what two packages share belongs in a public module.
    """

    type_name = "private_modules"

    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph, verbose: bool) -> ContractCheck:
        broken: list[dict[str, object]] = []
        for package in self.packages:
            private = [
                name
                for name in graph.find_descendants(package)
                if any(part.startswith("_") and not part.startswith("__") for part in name.split("."))
            ]
            for module in sorted(private):
                for importer in sorted(graph.find_modules_that_directly_import(module)):
                    if importer == package or importer.startswith(package + "."):
                        continue
                    lines = sorted(
                        detail["line_number"]
                        for detail in graph.get_import_details(importer=importer, imported=module)
                    )
                    broken.append({"importer": importer, "imported": module, "lines": lines})
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for item in check.metadata["broken"]:
            lines = ", ".join(f"l.{n}" for n in item["lines"]) or "?"
            output.print_error(
                f"{item['importer']} imports {item['imported']} ({lines}), private to another package: "
                "move what both need to a public module",
                bold=False,
            )
            output.new_line()
