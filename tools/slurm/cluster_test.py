"""deploy/slurm/encode-array.sbatch on a real Slurm: a one-node cluster started here.

Debian's slurm-wlm and munge (`scripts/setup --slurm`) run as a private cluster in a temporary
directory (its own munge key and socket, slurm.conf, ports, spool; slurmctld and slurmd in the
foreground as child processes). A 4-shard array encodes a multi-tile raster into one store; its
first task submits the dependent `verify` job. The store must equal a single `geosam2 encode` run
byte for byte (every tile file, and the manifest once its timestamps are set aside), and the
verify job must have run and passed. Then the race: the same shard twice at once on a fresh store,
then the others, must still give the same bytes.

    python3 tools/slurm/cluster_test.py --binary .build/release/geosam2
"""
import argparse, hashlib, json, os, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "Tests/SAM2Tests/Fixtures/tiny/micro"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digests(store):
    files = {}
    for p in sorted(Path(store).rglob("*")):
        if p.is_file() and p.name != "manifest.json" and not p.name.startswith("."):
            files[str(p.relative_to(store))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def manifest(store):
    m = json.loads((Path(store) / "manifest.json").read_text())

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in ("created", "updated", "finalized")}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v
    return strip(m)


class Cluster:
    def __init__(self, work):
        self.work = Path(work)
        self.env = dict(os.environ)
        self.procs = []
        host = socket.gethostname()
        w = self.work
        for d in ("munge", "spool/ctld", "spool/d", "logs"):
            (w / d).mkdir(parents=True, exist_ok=True)
        key = w / "munge/munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.munge_socket = w / "munge/munge.socket"
        self.procs.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
             f"--pid-file={w}/munge/munged.pid", f"--log-file={w}/logs/munged.log", f"--seed-file={w}/munge/seed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.wait_for(lambda: self.munge_socket.exists(), "munged")
        cpus = os.cpu_count() or 2
        conf = w / "slurm.conf"
        conf.write_text(f"""ClusterName=geosam2test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={w}/spool/ctld
SlurmdSpoolDir={w}/spool/d
SlurmctldPidFile={w}/spool/slurmctld.pid
SlurmdPidFile={w}/spool/slurmd.pid
SlurmctldLogFile={w}/logs/slurmctld.log
SlurmdLogFile={w}/logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        self.env["SLURM_CONF"] = str(conf)
        for daemon in ("slurmctld", "slurmd"):
            self.procs.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=self.env,
                                               stdout=open(w / f"logs/{daemon}.out", "w"), stderr=subprocess.STDOUT))
        self.wait_for(lambda: "idle" in self.run(["sinfo", "-h", "-o", "%t"], check=False), "an idle node", timeout=90)

    def run(self, cmd, check=True, **kw):
        r = subprocess.run(cmd, env=kw.pop("env", self.env), capture_output=True, text=True, **kw)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        return r.stdout

    def wait_for(self, condition, what, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.3)
        logs = "".join(p.read_text()[-1500:] for p in (self.work / "logs").glob("*") if p.is_file())
        raise RuntimeError(f"timed out waiting for {what}\n{logs}")

    def idle(self):
        return self.run(["squeue", "-h"], check=False).strip() == ""

    def stop(self):
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", required=True)
    args = ap.parse_args()
    binary = str(Path(args.binary).resolve())
    model = ["--model", str(MICRO / "model.pt"), "--config", str(MICRO / "config.json")]
    results = []

    def check(ok, what, detail=""):
        results.append(bool(ok))
        print(("ok   " if ok else "FAIL ") + what + (f" ({detail})" if detail and not ok else ""))

    work = Path(tempfile.mkdtemp(prefix="geosam2-slurm-"))
    cluster = None
    try:
        raster = work / "scene.tif"
        subprocess.run([binary, "sample", str(raster), "--width", "2300", "--height", "1700"], check=True, capture_output=True)
        single = work / "single.geosam2"
        subprocess.run([binary, "encode", str(raster), "--out", str(single), "--quiet"] + model, check=True, capture_output=True)
        cluster = Cluster(work / "cluster")
        check(True, "a one-node Slurm cluster is up (munged, slurmctld, slurmd)")
        store = work / "array.geosam2"
        env = dict(cluster.env, GEOSAM2=binary)
        out = cluster.run(["sbatch", "--parsable", "--array=0-3", "--cpus-per-task=1", f"--chdir={work}",
                           str(ROOT / "deploy/slurm/encode-array.sbatch"), str(raster), str(store)] + model, env=env)
        job = out.strip().split(";")[0]
        check(job.isdigit(), f"the 4-shard array is submitted (job {job})")
        cluster.wait_for(cluster.idle, "the array and its verify job", timeout=900)
        logs = sorted(work.glob(f"geosam2-encode-{job}_*.log"))
        check(len(logs) == 4, f"four array tasks ran ({len(logs)} logs)")
        shards = set()
        for log in logs:
            events = [json.loads(l) for l in log.read_text().splitlines() if l.startswith("{")]
            if events:
                shards.add(events[-1].get("total"))
        verify = work / f"geosam2-verify-{job}.log"
        check(verify.exists(), "the first task submitted the verify job, which ran after the array")
        # Finished jobs stay listed for MinJobAge (300 s): their state and exit codes.
        jobs = [dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                for line in cluster.run(["scontrol", "show", "job", "-o"], check=False).splitlines() if line.strip()]
        tasks = [j for j in jobs if j.get("JobName") == "geosam2-encode"]
        verifies = [j for j in jobs if j.get("JobName") == "geosam2-verify"]
        check(len(tasks) == 4 and all(j.get("JobState") == "COMPLETED" and j.get("ExitCode") == "0:0" for j in tasks),
              "every array task completed with exit 0", str([(j.get("JobId"), j.get("JobState"), j.get("ExitCode")) for j in tasks]))
        check(len(verifies) == 1 and verifies[0].get("JobState") == "COMPLETED" and verifies[0].get("ExitCode") == "0:0",
              "one verify job, completed with exit 0", str(verifies)[:500])
        # Its dependency is cleared once met: it became eligible only when the last task ended.
        ends = sorted(j.get("EndTime", "") for j in tasks)
        check(verifies and verifies[0].get("EligibleTime", "") >= ends[-1], "the verify job waited for the whole array",
              f"eligible {verifies[0].get('EligibleTime') if verifies else None}, last task ended {ends[-1] if ends else None}")
        check(digests(store) == digests(single) and len(digests(single)) > 3,
              "the array's store equals a single encode byte for byte (tile files)",
              f"{len(digests(store))} vs {len(digests(single))} files")
        check(manifest(store) == manifest(single), "and the same manifest (timestamps aside)")
        check(json.loads((store / "manifest.json").read_text()).get("complete") is True, "the manifest is complete")
        vr = subprocess.run([binary, "verify", str(store)], capture_output=True, text=True)
        check(vr.returncode == 0, "verify passes on the array's store", vr.stderr.strip()[:200])

        # The race: shard 1/4 twice at once (a retry overlapping the first attempt), then the rest.
        raced = work / "raced.geosam2"
        base = [binary, "encode", str(raster), "--out", str(raced), "--quiet"] + model
        subprocess.run(base + ["--shard", "0/4"], check=True, capture_output=True)  # plans the store
        twins = [subprocess.Popen(base + ["--shard", "1/4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        codes = [p.wait(timeout=600) for p in twins]
        check(codes == [0, 0], "the same shard twice at once both succeed", str([p.stderr.read()[-200:] for p in twins]))
        for k in (3, 2):
            subprocess.run(base + ["--shard", f"{k}/4"], check=True, capture_output=True)
        check(digests(raced) == digests(single) and manifest(raced) == manifest(single),
              "after the race the store still equals a single encode byte for byte")
    except Exception as error:
        check(False, "cluster test aborted", str(error)[-2000:])
    finally:
        if cluster:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    failed = results.count(False)
    print(f"{results.count(True)} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
