"""Offline schema check of the Kubernetes manifests in deploy/kubernetes (no cluster runs here).

Each manifest must pass `kubernetes-validate --strict` (the Kubernetes OpenAPI schemas bundled with
the PyPI package, no network) and keep its contract: an Indexed Job whose pod passes
JOB_COMPLETION_INDEX/completions to `geosam2 encode --shard`. A copy with a misspelt field and one
with a wrong type must fail, so the check is known to discriminate.

    .venv-deploy/bin/python tools/deploy/validate_kubernetes.py
"""
import copy, os, subprocess, sys, tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = str(Path(sys.executable).parent / "kubernetes-validate")


def valid(path):
    r = subprocess.run([VALIDATE, "--strict", "--quiet", str(path)], capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def main():
    passed = failed = 0

    def check(name, ok, detail=""):
        nonlocal passed, failed
        print(("ok   " if ok else "FAIL ") + name + (f" ({detail[:300]})" if detail and not ok else ""))
        passed, failed = (passed + 1, failed) if ok else (passed, failed + 1)

    manifests = sorted((ROOT / "deploy/kubernetes").glob("*.yaml"))
    check("manifests found", len(manifests) >= 2, str(manifests))
    for path in manifests:
        ok, detail = valid(path)
        check(f"{path.name} passes the schema (strict)", ok, detail)
    job = yaml.safe_load((ROOT / "deploy/kubernetes/encode-job.yaml").read_text())
    spec = job["spec"]
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    check("the encode Job is Indexed", spec.get("completionMode") == "Indexed")
    check("its shard count is its completions", env.get("SHARDS") == str(spec["completions"]), f"{env.get('SHARDS')} vs {spec['completions']}")
    check("each pod encodes shard JOB_COMPLETION_INDEX/SHARDS",
          "--shard \"${JOB_COMPLETION_INDEX}/${SHARDS}\"" in " ".join(container["args"]), " ".join(container["args"]))
    with tempfile.TemporaryDirectory() as tmp:
        for name, mutate in [("misspelt field", lambda d: d["spec"].__setitem__("completionsMode", "Indexed")),
                             ("wrong type", lambda d: d["spec"].__setitem__("completions", "eight"))]:
            broken = copy.deepcopy(job)
            mutate(broken)
            path = Path(tmp) / "broken.yaml"
            path.write_text(yaml.safe_dump(broken))
            ok, _ = valid(path)
            check(f"a manifest with a {name} is refused", not ok)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
