#!/usr/bin/env python3
"""Score `hearken analyze --json` on every corpus scenario against its truth.json.
Usage: scripts/score_corpus.py [extra analyze args...]   (prints per-scenario errors)"""
import json, subprocess, sys, glob, os
root = os.path.join(os.path.dirname(__file__), "..")
corpus = os.path.join(root, "..", "shared", "corpus", "dev")
exe = os.path.join(root, "target", "debug", "hearken")
bad = 0
for d in sorted(glob.glob(os.path.join(corpus, "*"))):
    t = json.load(open(os.path.join(d, "truth.json")))["metrics"]
    out = subprocess.run([exe, "analyze", "--customer", d + "/customer.wav", "--agent", d + "/agent.wav", "--json"] + sys.argv[1:], capture_output=True, text=True)
    o = json.loads(out.stdout)
    errs = []
    tr = abs(o["talk_ratio_agent"] - t["talk_ratio_agent"])
    if tr > 0.03: errs.append(f"ratio {o['talk_ratio_agent']:.3f} vs {t['talk_ratio_agent']:.3f}")
    for k in ["by_agent", "by_customer"]:
        if o["interruptions"][k] != t["interruptions"][k]: errs.append(f"intr {k} {o['interruptions'][k]} vs {t['interruptions'][k]}")
    for k in ["gt_3s", "gt_5s", "gt_6s", "gt_10s"]:
        if o["dead_air"][k]["count"] != t["dead_air"][k]["count"]: errs.append(f"dead {k} {o['dead_air'][k]['count']} vs {t['dead_air'][k]['count']}")
    tl = [(r["to"], round(r["latency_s"], 2)) for r in t["responses"]]
    ol = [(r["to"], round(r["latency_s"], 2)) for r in o["responses"]]
    lat_err = None
    if len(tl) != len(ol) or any(a[0] != b[0] for a, b in zip(tl, ol)):
        errs.append(f"responses {ol} vs {tl}")
    else:
        lat_err = max([abs(a[1] - b[1]) for a, b in zip(tl, ol)] or [0])
        if lat_err > 0.25: errs.append(f"latency err {lat_err:.2f}: {ol} vs {tl}")
    for p in ["customer", "agent"]:
        e = abs(o["longest_monologue"][p]["longest_s"] - t["longest_monologue"][p]["longest_s"])
        if e > 1.0: errs.append(f"monologue {p} {o['longest_monologue'][p]['longest_s']} vs {t['longest_monologue'][p]['longest_s']}")
    bci = sum(1 for e in o["interruptions"]["events"] for b in t.get("backchannels_in_overlap", {}).get("events", []) if abs(e["at"] - b["at"]) < 0.3)
    if bci: errs.append(f"{bci} back-channels counted as interruptions")
    bad += bool(errs)
    print(f"{os.path.basename(d):24} ratio_err={tr:.3f} lat_err={lat_err if lat_err is None else round(lat_err,2)} talk c={o['talk_time_s']['customer']:.2f}/{t['talk_time_s']['customer']:.2f} a={o['talk_time_s']['agent']:.2f}/{t['talk_time_s']['agent']:.2f} {'OK' if not errs else 'FAIL ' + '; '.join(errs)}")
print(f"{bad} scenario(s) failing")
