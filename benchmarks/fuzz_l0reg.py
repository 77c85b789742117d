"""Seeded fuzz of l0reg.solve: every promise on thousands of random small problems.

Problems come from :func:`l0reg.testing.fuzz_problem` (n, p ≤ 30, float32/float64,
C/F order, λ = 0 or in [1e-4, 10], w̄ random or 0, Gaussian / Toeplitz /
duplicated / near-duplicate / zero-column / integer / low-rank / column-scaled
designs); :func:`l0reg.testing.check_solve` checks ‖w‖₀ ≤ k, F ≤ F(start),
F ≤ F(0), F ≤ F(magnitude + refit), the reported objective against a fresh one,
and the gap to enumeration where C(p, k) ≤ 5000.

    python benchmarks/fuzz_l0reg.py                 # 5,000 problems
    python benchmarks/fuzz_l0reg.py --problems 500
"""
import argparse
from collections import defaultdict

from l0reg.testing import DESIGNS, check_solve, fuzz_problem
from _common import environment, report


def _group_row(label, outcomes):
    enumerable = [o for o in outcomes if o["gap"] is not None]
    return {"group": label, "problems": len(outcomes),
            "violations": sum(bool(o["violations"]) for o in outcomes),
            "enumerable": len(enumerable),
            "at_optimum": sum(bool(o["at_optimum"]) for o in enumerable),
            "optimum_rate": (sum(bool(o["at_optimum"]) for o in enumerable) / len(enumerable)
                             if enumerable else None),
            "certified": sum(o["certified"] for o in outcomes),
            "max_gap": max((o["gap"] for o in enumerable), default=None)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=5000)
    parser.add_argument("--exhaustive", choices=["auto", "off"], default="auto",
                        help="'off' measures the search alone (solve(..., exhaustive=False))")
    args = parser.parse_args()
    meta = environment(args)
    kwargs = {} if args.exhaustive == "auto" else {"exhaustive": False}
    outcomes = [check_solve(fuzz_problem(seed), **kwargs) for seed in range(args.problems)]

    groups = defaultdict(list)
    for o in outcomes:
        groups[o["design"]].append(o)
        groups[f"{o['dtype']}, λ {'> 0' if o['lam'] > 0 else '= 0'}"].append(o)
    rows = [_group_row("all", outcomes)]
    rows += [_group_row(name, groups[name]) for name in sorted(groups) if name not in DESIGNS]
    rows += [_group_row(name, groups[name]) for name in DESIGNS]
    columns = [("group", "group", ""), ("problems", "problems", "d"), ("violations", "promise violations", "d"),
               ("enumerable", "enumerable", "d"), ("at_optimum", "at optimum", "d"),
               ("optimum_rate", "optimum rate", ".2%"), ("certified", "certified", "d"),
               ("max_gap", "max gap", ".2e")]
    failures = [{"problem": o["problem"], "what": "; ".join(o["violations"]) or f"gap {o['gap']:.3g}"}
                for o in outcomes if o["violations"] or o["at_optimum"] is False]
    sections = [("Promises and optimality by group", rows, columns)]
    if failures:
        sections.append(("Problems with a violation or off the optimum", failures[:50],
                         [("problem", "problem", ""), ("what", "what", "")]))
    name = "fuzz_l0reg" if args.exhaustive == "auto" else "fuzz_l0reg_search_only"
    report(name, f"l0reg fuzz: {args.problems} random small problems", sections, meta, notes=[
        "at optimum: F ≤ F* + 1e-6·max(F*, ε·½‖b‖²) + the round-off of evaluating F (F* by l0reg.brute_force)",
        "gap: (F − F*)/max(F*, ε·½‖b‖²), ε of A's dtype",
        "float32 with λ = 0: the float64 optimum may use directions float32 data cannot resolve "
        "(coefficients float32 cannot hold); the solver's refits drop them by design"])


if __name__ == "__main__":
    main()
