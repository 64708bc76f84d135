"""The report helpers of the root benchmarks (hotpath_bench.sh,
firstwrite_bench.sh): their report is a python3 heredoc run with
PYTHONPATH=bench/ (see bl_report in bench/bench_lib.sh) that imports this.

  meta, md = header(OUT, KEYS): DIR/meta.txt as a dict, and the report's
      first lines (the command, then "* key: value" for each of KEYS there)
  med(VALS, KEY), points(VALS, SECTION): the median of VALS[KEY] (None when
      none), the points of SECTION in the order they first ran (VALS keyed
      by (section, point, row))
  f0, f2, rat: a number with 0 or 2 decimals ("–" for None), a ratio (None
      when either side is missing or the divisor 0)
  target(TARGETS, DESC, GOAL, GOT), targets_md(TITLE, TARGETS): collect
      (point, value) pairs for a goal (>= GOAL, or <= -GOAL when GOAL < 0)
      and the PASS/MISS table of them
"""
import os
import statistics


def header(out, keys):
    meta = dict(l.rstrip("\n").split("\t", 1)
                for l in open(os.path.join(out, "meta.txt")) if "\t" in l)
    md = ["Command: `" + meta["command"] + "`", ""]
    for k in keys:
        if k in meta: md.append(f"* {k}: {meta[k]}")
    md.append("")
    return meta, md


def med(d, k):
    v = d.get(k)
    return statistics.median(v) if v else None


def points(d, s):
    seen = []
    for (s2, p, _) in d:
        if s2 == s and p not in seen: seen.append(p)
    return seen


def f0(x): return "–" if x is None else f"{x:.0f}"
def f2(x): return "–" if x is None else f"{x:.2f}"
def rat(a, b): return None if a is None or b is None or b == 0 else a / b


def target(targets, desc, goal, got):
    targets.append((desc, goal, [(p, x) for p, x in got if x is not None]))


def targets_md(title, targets, na_goal=lambda goal: f"≥ {goal:.2f}"):
    """The targets table (none without targets); NA_GOAL: a goal's column
    in a row that got no value."""
    if not targets:
        return []
    md = [f"### Targets ({title})", "", "| target | goal | worst | verdict |", "|---|---:|---:|---|"]
    for desc, goal, got in targets:
        if not got:
            md.append(f"| {desc} | {na_goal(goal)} | – | n/a |"); continue
        if goal < 0:  # an upper bound
            worst = max(got, key=lambda kv: kv[1]); miss = [p for p, x in got if x > -goal]
            md.append(f"| {desc} | ≤ {-goal} | {worst[1]:.0f} | {'PASS' if not miss else 'MISS (' + ', '.join(miss) + ')'} |")
        else:
            worst = min(got, key=lambda kv: kv[1]); miss = [p for p, x in got if x < goal]
            md.append(f"| {desc} | ≥ {goal:.2f} | {worst[1]:.2f} | {'PASS' if not miss else 'MISS (' + ', '.join(miss) + ')'} |")
    md.append("")
    return md
