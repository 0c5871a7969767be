#!/usr/bin/env python3
"""Compare the VAD kinds of `hearken analyze` on the corpus (python3, stdlib only).

For each VAD kind (default: energy and webrtc) runs
    target/release/hearken analyze --customer C --agent A --vad KIND --json
on every scenario under ../shared/corpus/dev and prints:

1. Frame accuracy: the detected speech segments (`segments.customer/agent` of the JSON) against
   the union of truth.json's per-utterance `speech_segments`, in 10 ms frames (a frame counts as
   speech when its centre lies in a segment). Precision, recall and F1 per party and overall
   (both parties' frames pooled), per scenario and pooled over the corpus (also without d07,
   whose truth is a coarse human annotation with unlabelled crosstalk).
2. End metrics per scenario against truth.json's `metrics`: talk ratio, interruptions, dead air,
   responses and their latencies, longest monologues (ours/truth), then the verdict of
   scripts/score_corpus.py run with `--vad KIND` (that script uses target/debug/hearken, so
   run `cargo build` as well as `cargo build --release` first).
3. Response latencies: truth's (from utterance = clip boundaries), the same response measured
   between truth's own speech_segments, and ours per VAD kind.
4. Where detection and truth disagree by 0.2 s or more: speech we detect outside the party's
   truth speech ("extra": unlabelled speech, crosstalk, noise, word tails) and truth speech we
   do not detect ("missed": quiet speech, or pauses inside a coarsely annotated turn), each with
   the level of both legs over the interval (power mean, dBFS), which tells the party's own
   speech (own leg loud) from the other party's voice leaking into the leg (other leg louder).

Usage: scripts/vad_compare.py [--kinds energy,webrtc] [--exe PATH] [--corpus DIR]
                              [--no-score] [--json OUT.json]
"""
import argparse
import array
import glob
import json
import math
import os
import subprocess
import sys
import wave

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FRAME = 0.01
PARTIES = ("customer", "agent")


def union(iv):
    out = []
    for s, e in sorted(iv):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def frames(iv, n):
    """Per 10 ms frame: whether the frame centre lies inside one of the intervals."""
    f = [False] * n
    for s, e in iv:
        i0 = max(0, int(round(s / FRAME - 0.5)))
        for i in range(i0, n):
            c = (i + 0.5) * FRAME
            if c >= e:
                break
            if c >= s:
                f[i] = True
    return f


def overlap(a, b):
    s = 0.0
    for x0, x1 in a:
        for y0, y1 in b:
            s += max(0.0, min(x1, y1) - max(x0, y0))
    return s


def minus(a, b):
    """Intervals of a not covered by b (both sorted, non-overlapping)."""
    out = []
    for s, e in a:
        cur = s
        for bs, be in b:
            if be <= cur or bs >= e:
                continue
            if bs > cur:
                out.append((cur, bs))
            cur = max(cur, be)
        if cur < e:
            out.append((cur, e))
    return out


def read_wav(path):
    w = wave.open(path)
    if w.getsampwidth() != 2 or w.getnchannels() != 1:
        sys.exit(f"{path}: expected mono 16-bit PCM")
    x = array.array("h", w.readframes(w.getnframes()))
    if sys.byteorder == "big":
        x.byteswap()
    return x, w.getframerate()


def level_dbfs(pcm, rate, s, e):
    x = pcm[int(s * rate):int(e * rate)]
    if not x:
        return -100.0
    ms = sum(v * v for v in x) / len(x) / 32768.0 ** 2
    return 10 * math.log10(ms) if ms > 1e-10 else -100.0


def prf(tp, fp, fn):
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f = 2 * p * r / (p + r) if p + r else float("nan")
    return p, r, f


def counts(ours, truth):
    tp = sum(1 for o, t in zip(ours, truth) if o and t)
    fp = sum(1 for o, t in zip(ours, truth) if o and not t)
    fn = sum(1 for o, t in zip(ours, truth) if t and not o)
    return [tp, fp, fn]


def truth_segments(truth):
    segs = {p: [] for p in PARTIES}
    for u in truth["utterances"]:
        segs[u["party"]].extend(tuple(s) for s in u["speech_segments"])
    return {p: union(v) for p, v in segs.items()}


def analyze(exe, d, kind):
    cmd = [exe, "analyze", "--customer", os.path.join(d, "customer.wav"),
           "--agent", os.path.join(d, "agent.wav"), "--vad", kind, "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: exit {out.returncode}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def fmt3(x):
    return "  -  " if x != x else f"{x:.3f}"


def end_metrics(o, t):
    """The quantities scripts/score_corpus.py checks, ours vs truth."""
    m = t["metrics"]
    r = {
        "ratio": (o["talk_ratio_agent"], m["talk_ratio_agent"]),
        "ratio_err": abs(o["talk_ratio_agent"] - m["talk_ratio_agent"]),
        "intr": ((o["interruptions"]["by_agent"], o["interruptions"]["by_customer"]),
                 (m["interruptions"]["by_agent"], m["interruptions"]["by_customer"])),
        "dead": (tuple(o["dead_air"][k]["count"] for k in ("gt_3s", "gt_5s", "gt_6s", "gt_10s")),
                 tuple(m["dead_air"][k]["count"] for k in ("gt_3s", "gt_5s", "gt_6s", "gt_10s"))),
        "mono": {p: (o["longest_monologue"][p]["longest_s"], m["longest_monologue"][p]["longest_s"])
                 for p in PARTIES},
    }
    tl = [(x["to"], round(x["latency_s"], 2)) for x in m["responses"]]
    ol = [(x["to"], round(x["latency_s"], 2)) for x in o["responses"]]
    r["responses"] = (len(ol), len(tl))
    if len(tl) == len(ol) and all(a[0] == b[0] for a, b in zip(tl, ol)):
        r["lat_err"] = max([abs(a[1] - b[1]) for a, b in zip(tl, ol)] or [0.0])
    else:
        r["lat_err"] = None
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", default="energy,webrtc")
    ap.add_argument("--exe", default=os.path.join(ROOT, "target", "release", "hearken"))
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpus", "dev"))
    ap.add_argument("--no-score", action="store_true", help="do not run scripts/score_corpus.py")
    ap.add_argument("--json", help="also write all numbers to this file")
    ap.add_argument("--min-diff", type=float, default=0.2,
                    help="shortest disagreement listed in section 4, seconds (default 0.2)")
    a = ap.parse_args()
    kinds = [k for k in a.kinds.split(",") if k]
    if not os.access(a.exe, os.X_OK):
        sys.exit(f"{a.exe} not found: run `cargo build --release` first")
    dirs = sorted(d for d in glob.glob(os.path.join(a.corpus, "*"))
                  if os.path.isfile(os.path.join(d, "truth.json")))
    if not dirs:
        sys.exit(f"no scenarios under {a.corpus}")
    names = [os.path.basename(d) for d in dirs]
    truths = {n: json.load(open(os.path.join(d, "truth.json"))) for n, d in zip(names, dirs)}
    tsegs = {n: truth_segments(t) for n, t in truths.items()}
    outs = {k: {n: analyze(a.exe, d, k) for n, d in zip(names, dirs)} for k in kinds}
    report = {"exe": a.exe, "kinds": kinds, "scenarios": names, "frame": {}, "end": {},
              "latency": [], "disagreements": {}}

    # 1. Frame accuracy.
    print("== Frame accuracy of speech segments vs truth speech_segments (10 ms frames) ==")
    print(f"{'vad':7} {'scenario':24} {'customer P/R/F1':>20} {'agent P/R/F1':>20} {'overall P/R/F1':>20}")
    for k in kinds:
        pooled = {"all": {p: [0, 0, 0] for p in PARTIES + ("overall",)},
                  "no_d07": {p: [0, 0, 0] for p in PARTIES + ("overall",)}}
        report["frame"][k] = {}
        for n in names:
            o = outs[k][n]
            nf = int(round(truths[n]["metrics"]["call_duration_s"] / FRAME))
            row = {}
            for p in PARTIES:
                c = counts(frames(o["segments"][p], nf), frames(tsegs[n][p], nf))
                row[p] = c
            row["overall"] = [row["customer"][i] + row["agent"][i] for i in range(3)]
            for key in ("all",) + (("no_d07",) if not n.startswith("d07") else ()):
                for p in row:
                    pooled[key][p] = [x + y for x, y in zip(pooled[key][p], row[p])]
            cells = ["/".join(fmt3(x) for x in prf(*row[p])) for p in PARTIES + ("overall",)]
            print(f"{k:7} {n:24} {cells[0]:>20} {cells[1]:>20} {cells[2]:>20}")
            report["frame"][k][n] = {p: dict(zip(("p", "r", "f1"), prf(*row[p])), tp_fp_fn=row[p])
                                     for p in row}
        for key, label in (("all", "ALL (pooled)"), ("no_d07", "ALL but d07")):
            cells = ["/".join(fmt3(x) for x in prf(*pooled[key][p]))
                     for p in PARTIES + ("overall",)]
            print(f"{k:7} {label:24} {cells[0]:>20} {cells[1]:>20} {cells[2]:>20}")
            report["frame"][k][key] = {p: dict(zip(("p", "r", "f1"), prf(*pooled[key][p])))
                                       for p in pooled[key]}
        print()

    # 2. End metrics.
    print("== End metrics vs truth (ours/truth) ==")
    print(f"{'vad':7} {'scenario':24} {'ratio':>13} {'err':>6} {'intr a,c':>11} {'dead >3/5/6/10':>18}"
          f" {'resp':>6} {'max lat err':>11} {'mono cust':>13} {'mono agent':>13}")
    for k in kinds:
        report["end"][k] = {}
        for n in names:
            e = end_metrics(outs[k][n], truths[n])
            report["end"][k][n] = e
            intr = f"{e['intr'][0][0]},{e['intr'][0][1]}/{e['intr'][1][0]},{e['intr'][1][1]}"
            dead = "/".join(map(str, e["dead"][0])) + " | " + "/".join(map(str, e["dead"][1]))
            lat = "n/a" if e["lat_err"] is None else f"{e['lat_err']:.2f}"
            mono = {p: f"{e['mono'][p][0]:.1f}/{e['mono'][p][1]:.1f}" for p in PARTIES}
            print(f"{k:7} {n:24} {e['ratio'][0]:.3f}/{e['ratio'][1]:.3f} {e['ratio_err']:6.3f}"
                  f" {intr:>11} {dead:>18} {e['responses'][0]:>2}/{e['responses'][1]:<3}"
                  f" {lat:>11} {mono['customer']:>13} {mono['agent']:>13}")
        if not a.no_score:
            score = os.path.join(ROOT, "scripts", "score_corpus.py")
            r = subprocess.run([sys.executable, score, "--vad", k], capture_output=True, text=True)
            lines = [l for l in r.stdout.splitlines() if l.strip()]
            print(f"  score_corpus.py --vad {k} (target/debug/hearken):")
            for l in lines:
                print("    " + l)
            if r.returncode != 0 or not lines:
                print(f"    (exit {r.returncode}) {r.stderr.strip()[-500:]}")
            report["end"][k]["score_corpus"] = lines
        print()

    # 3. Latencies: clip boundaries vs speech segments vs ours.
    print("== Response latency: truth (clip bounds) vs truth (own speech_segments) vs ours ==")
    print(f"{'scenario':24} {'to':9} {'at':>6} {'truth':>6} {'t.segs':>6} {'diff':>6} "
          + " ".join(f"{k:>7}" for k in kinds))
    for n in names:
        t = truths[n]
        utt = {u["id"]: u for u in t["utterances"]}
        for r in t["metrics"]["responses"]:
            p, q = utt[r["prev_utterance"]], utt[r["utterance"]]
            seg_lat = min(s[0] for s in q["speech_segments"]) - max(s[1] for s in p["speech_segments"])
            ours = []
            for k in kinds:
                m = [x for x in outs[k][n]["responses"]
                     if x["to"] == r["to"] and abs(x["at"] - r["start"]) < 1.0]
                ours.append(m[0]["latency_s"] if m else None)
            row = {"scenario": n, "to": r["to"], "at": r["start"], "truth": r["latency_s"],
                   "truth_segments": round(seg_lat, 3), "ours": dict(zip(kinds, ours))}
            report["latency"].append(row)
            print(f"{n:24} {r['to']:9} {r['start']:6.2f} {r['latency_s']:6.2f} {seg_lat:6.2f}"
                  f" {seg_lat - r['latency_s']:+6.2f} "
                  + " ".join(f"{x:7.2f}" if x is not None else f"{'-':>7}" for x in ours))
    print()

    # 4. Where detection and truth disagree.
    print(f"== Disagreements of at least {a.min_diff:.2f} s: extra = detected outside the party's"
          " truth speech, missed = truth speech not detected; levels of this leg / other leg ==")
    for k in kinds:
        report["disagreements"][k] = {}
        for n, d in zip(names, dirs):
            pcm = {p: read_wav(os.path.join(d, p + ".wav")) for p in PARTIES}
            rows = []
            for p in PARTIES:
                q = "agent" if p == "customer" else "customer"
                ours = union([tuple(x) for x in outs[k][n]["segments"][p]])
                for what, iv in (("extra", minus(ours, tsegs[n][p])),
                                 ("missed", minus(tsegs[n][p], ours))):
                    for s, e in iv:
                        if e - s < a.min_diff - 1e-9:
                            continue
                        rows.append({"party": p, "kind": what, "start": round(s, 2),
                                     "end": round(e, 2), "len": round(e - s, 2),
                                     "own_dbfs": round(level_dbfs(*pcm[p], s, e), 1),
                                     "other_dbfs": round(level_dbfs(*pcm[q], s, e), 1),
                                     "other_truth_speech": round(
                                         overlap([(s, e)], tsegs[n][q]) / (e - s), 2)})
            rows.sort(key=lambda r: (r["start"], r["party"]))
            report["disagreements"][k][n] = rows
            if not rows:
                continue
            ex = sum(r["len"] for r in rows if r["kind"] == "extra")
            mi = sum(r["len"] for r in rows if r["kind"] == "missed")
            print(f"{k:7} {n:24} extra {ex:.2f} s, missed {mi:.2f} s")
            for r in rows:
                print(f"          {r['kind']:6} {r['party']:9} {r['start']:6.2f}-{r['end']:6.2f}"
                      f" ({r['len']:.2f} s)  levels {r['own_dbfs']:6.1f} / {r['other_dbfs']:6.1f}"
                      f" dBFS, other party's truth speech {r['other_truth_speech']:.0%} of it")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1, default=str)


if __name__ == "__main__":
    main()
