"""Adapters: third-party GPTQ/Qronos/GPFQ implementations, driven through the audit's contract.

Each adapter calls the library's *own* code (never a copy of it) on one linear layer. It maps the
audit's grid (:class:`algorithms.Grid`), absolute damping ``λ`` (``H = XᵀX + λI``) and processing
order to the library's configuration, and returns an :class:`AdapterResult`: ``Q`` (what the audit
judges) and ``used``, what the library was actually given (scales, zero points, group index,
permutation, the damping in the library's own convention). A case the library cannot express is
declined with :class:`verify.audit.Decline` and the reason.

``ADAPTERS`` maps a name (``"brevitas-gptq"``) to an :class:`Adapter`; ``ptq-bounds audit --list``
prints them and ``ptq-bounds audit --impl NAME`` audits one (:func:`audit_adapter`).

``kind`` says what the implementation is: ``optq``, ``qronos-original``, ``qronos-projection`` (the
package's claims apply to it *as proved*, ``proved=True``), or ``other`` (an algorithm that is not
OPTQ, e.g. GPFQ: ``proved=False``). An ``other`` implementation is audited under ``audit_kind`` (the
claims of that algorithm), and every verdict is then an *empirical* answer ("does OPTQ's bound also
hold for GPFQ's Q on these layers?"), labelled as such in the report, never a check of a theorem.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Adapter", "AdapterResult", "AdapterReport", "ADAPTERS", "get", "audit_adapter", "KINDS"]

#: what an adapter may declare as its kind
KINDS = ("optq", "qronos-original", "qronos-projection", "other")


@dataclass
class AdapterResult:
    """What an adapter returns: ``Q`` (n × N, original feature order) and ``used`` (the library's
    configuration as actually applied)."""

    Q: object
    used: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Adapter:
    """One third-party implementation. ``quantizer`` follows the audit contract
    (:mod:`verify.audit`); ``module`` is what must be importable; ``install`` how to get it."""

    name: str
    library: str  # the PyPI distribution
    module: str  # the import name that must be present
    kind: str
    proved: bool
    quantizer: Callable
    install: str
    audit_kind: str = "optq"  # the claims it is audited against
    orders: tuple = ("natural",)
    grids: tuple = ("gptq",)
    rounding: str = "nearest"
    precision: str = "float64"
    algorithm: str = ""  # the library's entry point, for the report
    conventions: tuple = ()  # (convention, how this library does it)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind != "other" and self.audit_kind != self.kind:
            raise ValueError(f"{self.name}: audit_kind must equal kind for {self.kind!r}")
        if self.proved and self.kind == "other":
            raise ValueError(f"{self.name}: an 'other' implementation cannot have proved claims")

    def version(self) -> str | None:
        """The installed version of the library, or None."""
        try:
            return importlib.metadata.version(self.library)
        except importlib.metadata.PackageNotFoundError:
            return None

    def why_unavailable(self) -> str | None:
        """None when the library imports; else one line saying why and what provides it."""
        try:
            if importlib.util.find_spec(self.module) is None:
                return f"{self.library} is not installed ({self.install})"
            importlib.import_module(self.module)
        except Exception as exc:  # noqa: BLE001 - any import failure makes the adapter unavailable
            return f"{self.library} cannot be imported ({type(exc).__name__}: {' '.join(str(exc).split())[:160]}; {self.install})"
        return None

    def available(self) -> bool:
        return self.why_unavailable() is None

    @property
    def label(self) -> str:
        """How the claims apply: 'as proved' or 'empirical'."""
        return "as proved" if self.proved else f"empirical (not {self.audit_kind}; {self.audit_kind}'s claims checked as questions)"

    def describe(self) -> dict:
        return {"name": self.name, "library": self.library, "version": self.version(), "kind": self.kind,
                "audit_kind": self.audit_kind, "proved": self.proved, "claims": self.label,
                "algorithm": self.algorithm, "orders": list(self.orders), "grids": list(self.grids),
                "rounding": self.rounding, "precision": self.precision, "install": self.install,
                "available": self.available(), "why_unavailable": self.why_unavailable(),
                "conventions": [list(c) for c in self.conventions]}


def _registry() -> dict:
    from . import autogptq as _autogptq
    from . import brevitas as _brevitas
    from . import gptqmodel as _gptqmodel
    from . import llmcompressor as _llmcompressor
    from . import quark as _quark

    out = {}
    for mod in (_brevitas, _llmcompressor, _gptqmodel, _quark, _autogptq):
        for a in mod.ADAPTERS:
            out[a.name] = a
    return out


ADAPTERS: dict = _registry()


def get(name: str) -> Adapter:
    """The adapter called ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise KeyError(f"unknown implementation {name!r}; known: {', '.join(ADAPTERS)}") from None


class AdapterReport:
    """An :class:`verify.audit.AuditReport` of an adapter, with the library, its version and how the
    claims apply. For ``proved=False`` every verdict is labelled *empirical*. Attributes and methods
    of the audit's report are available unchanged (``exit_code()``, ``status``, ``claims`` …)."""

    def __init__(self, report, adapter: Adapter):
        self.report = report
        self.adapter = adapter

    def __getattr__(self, name):
        return getattr(self.report, name)

    def header(self) -> list[str]:
        a = self.adapter
        lines = [f"implementation: {a.name} ({a.algorithm}) from {a.library} {a.version() or '(not installed)'}; "
                 f"kind {a.kind}; claims apply {a.label}"]
        for conv, how in a.conventions:
            lines.append(f"convention: {conv}: {how}")
        if not a.proved:
            lines.append(f"EMPIRICAL: {a.name} is not {a.audit_kind}; no theorem of this package covers it. Each "
                         f"verdict below answers 'does {a.audit_kind}'s claim also hold for its Q on these layers?'. "
                         f"The hypotheses describe an {a.audit_kind} loop; their failures say that its Q is not one an "
                         f"{a.audit_kind} loop would produce, which is expected.")
        return lines

    def format(self) -> str:
        body = self.report.format()
        if not self.adapter.proved:
            body = "\n".join(("  [empirical] " + ln[2:]) if ln.startswith("  ") and not ln.startswith("  not checked")
                             else ln for ln in body.splitlines())
            body = body.replace("FLAGGED: the quantizer violates a claim or a hypothesis",
                                "EMPIRICAL: a claim or hypothesis of "
                                f"{self.adapter.audit_kind} fails for this implementation (not a theorem's violation)")
        return "\n".join(self.header() + [body])

    def to_dict(self) -> dict:
        d = self.report.to_dict()
        d["implementation"] = self.adapter.describe()
        d["claims_apply"] = "as proved" if self.adapter.proved else "empirical"
        if not self.adapter.proved:
            for group in ("claims", "hypotheses"):
                for v in d.get(group, {}).values():
                    if isinstance(v, dict):
                        v["label"] = "empirical"
        return d


def audit_adapter(name_or_adapter, **kw) -> AdapterReport:
    """Audit one adapter with :func:`verify.audit.audit`; ``kw`` are forwarded (``families``,
    ``seed``, ``shrink`` …; ``orders``/``grids`` default to what the adapter supports). Raises
    ``KeyError`` for an unknown name and ``RuntimeError`` (with the install hint) when unavailable."""
    from ..audit import audit

    a = name_or_adapter if isinstance(name_or_adapter, Adapter) else get(name_or_adapter)
    why = a.why_unavailable()
    if why:
        raise RuntimeError(f"{a.name} is unavailable: {why}")
    kw.setdefault("orders", a.orders)
    kw.setdefault("grids", a.grids)
    kw.setdefault("rounding", a.rounding)
    kw.setdefault("precision", a.precision)
    kw.setdefault("kind", a.audit_kind)
    kw.setdefault("name", a.name)
    if kw.get("order") is not None:
        kw.pop("orders")
    return AdapterReport(audit(a.quantizer, **kw), a)
