"""The PSNR budget: which op groups to keep in float so that int8 costs at most N dB.

Sensitivity analysis: each group is quantized alone (everything else float) and its
PSNR-Y cost against the float model measured; then, starting from the fully
quantized model, groups are moved back to float one by one, the most cost per share of
the network first (or the lightest group whose own cost covers what the budget still
lacks), until the budget holds; groups that turn out not to be needed go
back to int8, and small groups are tried node by node. The target supplies ``measure(keep_float_groups) -> PSNR-Y``;
``KeepFloat`` is what every target does around it (``--keep-float`` names, the search
when ``--max-psnr-drop`` is given, the report's ``kept_float`` section).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

from edgesr.errors import EdgeSRError

# More than this fraction of the compute (ops, or MACs where the target counts them) in
# float: "most of the network".
MOST_IN_FLOAT = 0.5
# Once the budget holds, kept groups of at most this many nodes are tried node by node.
REFINE_MAX_NODES = 4

Measure = Callable[[Sequence[str]], float]
Stage = Callable[[str], None]


@dataclass
class GroupCost:
    group: str
    nodes: int
    psnr_y: float  # with only this group quantized
    cost_db: float  # float PSNR-Y - psnr_y


@dataclass
class BudgetResult:
    budget_db: float
    float_psnr_y: float
    plain_psnr_y: float
    met: bool
    kept_float: list[str] = field(default_factory=list)
    final_psnr_y: float | None = None
    sensitivity: list[GroupCost] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    float_fraction: float = 0.0
    verdict: str = ""

    @property
    def plain_delta_db(self) -> float:
        return self.plain_psnr_y - self.float_psnr_y

    @property
    def final_delta_db(self) -> float | None:
        return None if self.final_psnr_y is None else self.final_psnr_y - self.float_psnr_y

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["plain_delta_db"] = round(self.plain_delta_db, 4)
        data["final_delta_db"] = None if self.final_delta_db is None else round(self.final_delta_db, 4)
        return data


def search(groups: Mapping[str, Sequence[str]], measure: Measure, float_psnr: float, plain_psnr: float,
           budget_db: float, weight: Callable[[Sequence[str]], float] | None = None,
           stage: Stage | None = None) -> BudgetResult:
    """Keep the costliest groups in float until ``float - psnr <= budget_db``.

    ``weight(names)`` is the fraction of the network those groups (or nodes) hold
    (default: the node count share); above MOST_IN_FLOAT the result says plainly that the
    budget was met only by leaving most of the network in float. ``measure`` and
    ``weight`` take node names as well as group names (``_refine``).
    """
    if budget_db < 0:
        raise EdgeSRError(f"--max-psnr-drop {budget_db}: give a drop in dB >= 0")
    stage = stage or (lambda message: None)
    total = sum(len(v) for v in groups.values()) or 1
    weight = weight or (lambda names: sum(len(groups.get(n, [n])) for n in names) / total)
    result = BudgetResult(budget_db, float_psnr, plain_psnr, met=float_psnr - plain_psnr <= budget_db,
                          final_psnr_y=plain_psnr)
    if result.met:
        result.verdict = f"plain int8 is within the {budget_db:g} dB budget: nothing kept in float"
        return result
    names = list(groups)
    for index, group in enumerate(names):
        stage(f"sensitivity {index + 1}/{len(names)}: {group} ({len(groups[group])} nodes) quantized alone")
        value = measure([other for other in names if other != group])
        result.sensitivity.append(GroupCost(group, len(groups[group]), round(value, 4),
                                            round(float_psnr - value, 4)))
    remaining = _order(result.sensitivity, weight)
    costs = {cost.group: cost.cost_db for cost in result.sensitivity}
    kept: list[str] = []
    shortfall = None
    while remaining:
        group = _next_group(remaining, costs, weight, shortfall)
        remaining.remove(group)
        kept.append(group)
        if not remaining:
            value = float_psnr  # everything in float is the float model
        else:
            stage(f"budget: keeping {', '.join(kept)} in float")
            value = measure(list(kept))
        _record(result, kept, value)
        shortfall = float_psnr - value - budget_db
        if shortfall <= 0:
            result.met = True
            result.kept_float, result.final_psnr_y = list(kept), value
            break
    if result.met:
        _prune(result, measure, weight, stage)
        _refine(result, groups, measure, weight, stage)
    result.float_fraction = round(weight(result.kept_float), 4) if result.met else 1.0
    if not result.met:
        result.verdict = f"no choice of float groups meets the {budget_db:g} dB budget"
    elif result.float_fraction > MOST_IN_FLOAT:
        result.verdict = (f"the {budget_db:g} dB budget is met only by leaving most of the network in "
                          f"float ({result.float_fraction:.0%} of its compute: "
                          f"{', '.join(result.kept_float)})")
    else:
        result.verdict = (f"kept {', '.join(result.kept_float)} in float "
                          f"({result.float_fraction:.0%} of the compute) to meet {budget_db:g} dB")
    return result


def _record(result: BudgetResult, kept: Sequence[str], value: float) -> None:
    result.steps.append({"kept_float": list(kept), "psnr_y": round(value, 4),
                         "delta_db": round(value - result.float_psnr_y, 4)})


def _order(costs: Sequence[GroupCost], weight: Callable[[Sequence[str]], float]) -> list[str]:
    """The groups by cost per share of the network, most first: a 1-node group that
    costs 0.04 dB comes before a 138-node one that costs 0.05 (HiTNet's ONNX ``Conv:last``
    and ``Conv``), which would leave most of the MACs in float for the same gain. Groups
    that cost nothing come last, by cost."""
    def key(cost: GroupCost):
        if cost.cost_db <= 0:
            return (1, -cost.cost_db)
        return (0, -cost.cost_db / max(weight([cost.group]), 1e-9))

    return [cost.group for cost in sorted(costs, key=key)]


def _next_group(remaining: Sequence[str], costs: Mapping[str, float],
                weight: Callable[[Sequence[str]], float], shortfall: float | None) -> str:
    """The next group in cost-per-share order, unless a lighter group's own cost covers
    what the budget still lacks: then that one. HiTNet's fused ONNX with minmax ranges was
    0.002 dB short with its first, last and norm-input convs in float; next in order came
    the 115 dense convs (half the MACs), where the depthwise group (a tenth of them, 0.010
    dB alone) would do."""
    following = remaining[0]
    if shortfall is None:
        return following
    covering = [group for group in remaining if costs[group] >= shortfall]
    if not covering:
        return following
    lightest = min(covering, key=lambda group: (weight([group]), -costs[group]))
    return lightest if weight([lightest]) < weight([following]) else following


def _prune(result: BudgetResult, measure: Measure, weight: Callable[[Sequence[str]], float],
           stage: Stage) -> None:
    """Give whole kept groups back to int8 (the largest share first) while the budget
    holds: a group added early for its cost per share may not be needed once a later
    one is in float. The last group added is what met the budget, so it stays."""
    kept = list(result.kept_float)
    for group in sorted(kept[:-1], key=lambda name: -weight([name])):
        trial = [name for name in kept if name != group]
        stage(f"budget: {group} back in int8")
        value = measure(trial)
        _record(result, trial, value)
        if result.float_psnr_y - value <= result.budget_db:
            kept, result.final_psnr_y = trial, value
    result.kept_float = kept


def _refine(result: BudgetResult, groups: Mapping[str, Sequence[str]], measure: Measure,
            weight: Callable[[Sequence[str]], float], stage: Stage) -> None:
    """Give the nodes of small kept groups back to int8 one at a time (the largest share
    first) while the budget holds: one node can carry a group's whole cost (HiTNet's two
    ``Conv:norm-input`` convs cost 0.25 and 0.004 dB). A group left whole keeps its name."""
    kept = list(result.kept_float)
    for group in list(result.kept_float):
        members = list(groups.get(group, ()))
        if not 1 < len(members) <= REFINE_MAX_NODES:
            continue
        others = [name for name in kept if name != group]
        remaining = list(members)
        for node in sorted(members, key=lambda name: -weight([name])):
            trial = [name for name in remaining if name != node]
            stage(f"budget: {node} ({group}) back in int8")
            value = measure(others + trial)
            _record(result, others + trial, value)
            if result.float_psnr_y - value <= result.budget_db:
                remaining, result.final_psnr_y = trial, value
        kept = others + ([group] if remaining == members else remaining)
    result.kept_float = kept


def mac_share(macs: Mapping[str, int], float_nodes: Sequence[str]) -> dict[str, float]:
    """The report's ``macs``: of the multiply-accumulates of the compute nodes (``macs``,
    by node), how many run in int8 with ``float_nodes`` in float."""
    floated = set(float_nodes)
    int8 = sum(count for node, count in macs.items() if node not in floated)
    total = sum(macs.values())
    return {"int8_gmac": round(int8 / 1e9, 3), "float_gmac": round((total - int8) / 1e9, 3),
            "int8_fraction": round(int8 / max(1, total), 4)}


def resolve_keep_float(names: Sequence[str], groups: Mapping[str, Sequence[str]]) -> list[str]:
    """--keep-float: group names (as the report lists them) or node names; unknown -> error."""
    nodes = {n for v in groups.values() for n in v}
    unknown = [n for n in names if n not in groups and n not in nodes]
    if unknown:
        raise EdgeSRError(f"--keep-float {','.join(unknown)}: not a group or node of this graph "
                          f"(groups: {', '.join(groups)})")
    return list(names)


@dataclass
class KeepFloat:
    """One target's quantizable nodes in groups, and the measure of a choice of float groups.

    ``measure_nodes(nodes kept in float) -> PSNR-Y``; ``macs``: the multiply-accumulates
    of every Conv/Linear/MatMul node, which weigh the share of the network left in float;
    ``always_float``: those of them no choice makes int8 (PT2E's activation MatMuls)."""

    groups: Mapping[str, Sequence[str]]
    measure_nodes: Callable[[Sequence[str]], float]
    macs: Mapping[str, int]
    always_float: Sequence[str] = ()

    def mac_share(self, nodes: Sequence[str]) -> dict[str, float]:
        return mac_share(self.macs, [*self.always_float, *nodes])

    def nodes_of(self, names: Sequence[str]) -> list[str]:
        return [node for name in names for node in self.groups.get(name, [name])]

    def measure(self, names: Sequence[str]) -> float:
        return self.measure_nodes(self.nodes_of(names))

    def weight(self, names: Sequence[str]) -> float:
        return 1.0 - self.mac_share(self.nodes_of(names))["int8_fraction"]

    def choose(self, options, float_psnr: float | None, section: dict[str, Any],
               stage: Stage | None = None) -> list[str]:
        """The float groups of the artifact: ``--keep-float`` as given, else the budget
        search's choice when ``--max-psnr-drop`` is set (recorded under ``budget``), else
        none. Fills ``groups``, ``plain_int8`` and ``kept_float`` in ``section``."""
        keep = resolve_keep_float(options.keep_float, self.groups)
        section["groups"] = {name: len(nodes) for name, nodes in self.groups.items()}
        plain = self.measure(keep) if float_psnr is not None else None
        chosen = list(keep)
        if options.max_psnr_drop is not None and not keep and plain is not None:
            result = search(self.groups, self.measure, float_psnr, plain, options.max_psnr_drop,
                            weight=self.weight, stage=stage)
            section["budget"] = result.to_dict()
            chosen = list(result.kept_float) if result.met else []
        section["plain_int8"] = None if plain is None else {"psnr_y": round(plain, 4)}
        section["macs"] = self.mac_share(self.nodes_of(chosen))
        section["kept_float"] = {"groups": chosen, "nodes": self.nodes_of(chosen),
                                 "replay": f"--keep-float {','.join(chosen)}" if chosen else ""}
        return chosen
