#!/usr/bin/env python3
"""Generate the layered benchmark DAG for flow, Snakemake and DVC.

Stage L{i}S{j} (i layers, j wide) reads L{i-1}S{j} and L{i-1}S{(j+1) mod W} and writes
`(cat inputs; echo L{i}S{j}) | sort -u`; layer 0 writes `echo L0S{j}`.

usage: gen_dag.py TOOL LAYERS WIDTH OUTDIR [--change L{i}S{j}]
  TOOL is flow, snakemake, dvc or bare. --change makes that one stage write a different line.
  bare writes bare.sh: the same commands with no tool, layer after layer, each layer's commands
  two at a time (xargs -P 2, flow's and Snakemake's -c2 parallelism on these machines).
"""
import argparse
import os


def stages(layers, width, change):
    for i in range(layers):
        for j in range(width):
            name = f"L{i}S{j}"
            tag = name + ("-changed" if name == change else "")
            deps = [] if i == 0 else [f"L{i-1}S{j}", f"L{i-1}S{(j + 1) % width}"]
            yield name, tag, deps


def flow(layers, width, change):
    out = ["version: 1", "name: bench", "stages:"]
    for name, tag, deps in stages(layers, width, change):
        out.append(f"  {name}:")
        out.append("    kind: command")
        if deps:
            out.append(f"    needs: {{a: {deps[0]}, b: {deps[1]}}}")
            out.append(f'    run: (cat "$FLOW_IN_a/out" "$FLOW_IN_b/out"; echo {tag}) | sort -u > "$FLOW_OUT/out"')
        else:
            out.append(f'    run: echo {tag} > "$FLOW_OUT/out"')
    return "\n".join(out) + "\n", "workflow.yaml"


def snakemake(layers, width, change):
    out = [f"rule all:\n    input: {', '.join(repr(f'out/L{layers-1}S{j}') for j in range(width))}\n"]
    for name, tag, deps in stages(layers, width, change):
        if deps:
            ins = ", ".join(repr(f"out/{d}") for d in deps)
            out.append(f"rule {name}:\n    input: {ins}\n    output: 'out/{name}'\n"
                       f"    shell: '(cat {{input}}; echo {tag}) | sort -u > {{output}}'\n")
        else:
            out.append(f"rule {name}:\n    output: 'out/{name}'\n    shell: 'echo {tag} > {{output}}'\n")
    return "\n".join(out), "Snakefile"


def dvc(layers, width, change):
    out = ["stages:"]
    for name, tag, deps in stages(layers, width, change):
        out.append(f"  {name}:")
        if deps:
            out.append(f"    cmd: (cat out/{deps[0]} out/{deps[1]}; echo {tag}) | sort -u > out/{name}")
            out.append("    deps: [" + ", ".join(f"out/{d}" for d in deps) + "]")
        else:
            out.append(f"    cmd: mkdir -p out && echo {tag} > out/{name}")
        out.append(f"    outs: [out/{name}]")
    return "\n".join(out) + "\n", "dvc.yaml"


def bare(layers, width, change):
    out = ["#!/bin/sh", "set -e", "mkdir -p out"]
    layer = []
    for name, tag, deps in stages(layers, width, change):
        if deps:
            layer.append(f"(cat out/{deps[0]} out/{deps[1]}; echo {tag}) | sort -u > out/{name}")
        else:
            layer.append(f"echo {tag} > out/{name}")
        if len(layer) == width:
            quoted = " ".join("'" + c + "'" for c in layer)
            out.append(f"printf '%s\\0' {quoted} | xargs -0 -n 1 -P 2 sh -c")
            layer = []
    return "\n".join(out) + "\n", "bare.sh"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tool", choices=["flow", "snakemake", "dvc", "bare"])
    ap.add_argument("layers", type=int)
    ap.add_argument("width", type=int)
    ap.add_argument("outdir")
    ap.add_argument("--change", default="")
    a = ap.parse_args()
    text, name = {"flow": flow, "snakemake": snakemake, "dvc": dvc, "bare": bare}[a.tool](a.layers, a.width, a.change)
    os.makedirs(a.outdir, exist_ok=True)
    if a.tool == "dvc":
        os.makedirs(os.path.join(a.outdir, "out"), exist_ok=True)
    with open(os.path.join(a.outdir, name), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
