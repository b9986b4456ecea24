#!/usr/bin/python3
"""Real-process tests for ferry-dirtytrack (run as root; stdlib only).

Usage: test_dirtytrack.py BUILD_DIR [-k substring] [-v]
Prints one line per check and, last, exactly "N passed, M failed".
"""
import ctypes
import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

PAGE = 4096
BUILD = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "build")
HELPER = os.path.join(BUILD, "ferry-dirtytrack")
WORKLOAD = os.path.join(BUILD, "dt-workload")
CRIU = "/opt/ferry/bin/criu"
VERBOSE = "-v" in sys.argv
ONLY = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else None
TIMEOUT = 20.0

RESULTS = {"passed": 0, "failed": 0}
CLEANUP = []  # processes started by this test run (killed by pid at the end)
NUMBERS = {}
STOPS = []  # stop_us of every injection made by the tests


def log(msg):
    print(msg, flush=True)


def check(cond, name, detail=""):
    if cond:
        RESULTS["passed"] += 1
        log(f"PASS {name}" + (f"  ({detail})" if detail and VERBOSE else ""))
    else:
        RESULTS["failed"] += 1
        log(f"FAIL {name}" + (f"  ({detail})" if detail else ""))
    return cond


def skip(name, why):
    log(f"SKIP {name}: {why}")


# --------------------------------------------------------------------------- helpers

def read_exact(f, n, timeout=TIMEOUT):
    fd = f.fileno()
    buf = bytearray(n)
    mv = memoryview(buf)
    got = 0
    deadline = time.time() + timeout
    while got < n:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
        if not r:
            raise TimeoutError(f"timeout reading {n} bytes (got {got})")
        k = os.readv(fd, [mv[got:]])
        if not k:
            raise EOFError(f"EOF after {got}/{n} bytes")
        got += k
    return bytes(buf)


def read_line(f, timeout=TIMEOUT):
    fd = f.fileno()
    buf = bytearray()
    deadline = time.time() + timeout
    while True:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
        if not r:
            raise TimeoutError(f"timeout reading a line (got {bytes(buf)[:200]!r})")
        b = os.read(fd, 1)
        if not b:
            raise EOFError(f"EOF (partial line {bytes(buf)[:200]!r})")
        if b == b"\n":
            return bytes(buf)
        buf += b


class Helper:
    def __init__(self, prefix=()):
        self.p = subprocess.Popen(list(prefix) + [HELPER] + (["-v"] if VERBOSE else []), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=None if VERBOSE else subprocess.DEVNULL,
                                  bufsize=0)
        CLEANUP.append(self.p)

    def send_raw(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def reply(self, timeout=TIMEOUT):
        line = read_line(self.p.stdout, timeout)
        r = json.loads(line)
        data = b""
        if r.get("ok") and r.get("bytes"):
            data = read_exact(self.p.stdout, r["bytes"], timeout)
        return r, data

    def req(self, obj, timeout=TIMEOUT):
        self.send_raw((json.dumps(obj) + "\n").encode())
        r, d = self.reply(timeout)
        if obj.get("cmd") == "attach" and r.get("ok"):
            STOPS.extend(mm["stop_us"] for mm in r["mms"] if mm.get("new"))
        return r, d

    def req_discard(self, obj, timeout=TIMEOUT):
        """like req, but the payload is consumed into a reused buffer (a fast consumer)"""
        self.send_raw((json.dumps(obj) + "\n").encode())
        r = json.loads(read_line(self.p.stdout, timeout))
        n = r.get("bytes", 0) if r.get("ok") else 0
        if not hasattr(self, "_sink"):
            self._sink = memoryview(bytearray(4 << 20))
        fd, got, deadline = self.p.stdout.fileno(), 0, time.time() + timeout
        while got < n:
            select.select([fd], [], [], max(0.0, deadline - time.time()))
            k = os.readv(fd, [self._sink[:min(n - got, len(self._sink))]])
            if not k:
                raise EOFError("EOF in payload")
            got += k
        return r, got

    def close(self):
        try:
            self.req({"cmd": "quit"})
        except Exception:
            pass
        try:
            self.p.stdin.close()
        except Exception:
            pass
        try:
            self.p.wait(5)
        except Exception:
            self.p.kill()
            self.p.wait()
        return self.p.returncode


class Workload:
    def __init__(self, *args, prefix=()):
        # Its own session: CRIU refuses a task whose session leader lies outside its pid namespace,
        # which is what a CI runner without a terminal hands us.
        self.p = subprocess.Popen(list(prefix) + [WORKLOAD] + list(args), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, bufsize=0, start_new_session=True)
        CLEANUP.append(self.p)
        self.pid = self.p.pid
        first = read_line(self.p.stdout, 60).decode()
        assert first.startswith("ready"), first
        info = self.cmd("info").split()
        self.base, self.size = int(info[4]), int(info[6])
        self.npages = self.size // PAGE

    def cmd(self, c, timeout=TIMEOUT):
        self.p.stdin.write((c + "\n").encode())
        self.p.stdin.flush()
        return read_line(self.p.stdout, timeout).decode()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


class FifoChild:
    """Command channel to a child forked by a workload (fork IN OUT)."""

    def __init__(self, parent):
        self.dir = tempfile.mkdtemp(prefix="dtfifo")
        self.inp, self.outp = os.path.join(self.dir, "in"), os.path.join(self.dir, "out")
        os.mkfifo(self.inp)
        os.mkfifo(self.outp)
        r = parent.cmd(f"fork {self.inp} {self.outp}")
        assert r.startswith("ok"), r
        self.pid = int(r.split()[1])
        self.w = open(self.inp, "wb", buffering=0)
        self.r = open(self.outp, "rb", buffering=0)
        first = read_line(self.r).decode()
        assert first.startswith("ready"), first

    def cmd(self, c):
        self.w.write((c + "\n").encode())
        return read_line(self.r).decode()

    def close(self):
        try:
            self.w.close()
            self.r.close()
        except Exception:
            pass
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            # a grandchild (forked by the workload): wait until it is a zombie
            for _ in range(500):
                try:
                    if status_field(self.pid, "State")[0] in "ZX":
                        break
                except (OSError, TypeError):
                    break
                time.sleep(0.01)
        shutil.rmtree(self.dir, ignore_errors=True)


def parse_scan(data):
    out, o = {}, 0
    while o < len(data):
        pid, n = struct.unpack_from("<II", data, o)
        o += 8
        rr = []
        for _ in range(n):
            s, e = struct.unpack_from("<QQ", data, o)
            o += 16
            rr.append((s, e))
        out[pid] = rr
    assert o == len(data)
    return out


def pages_of(ranges):
    s = set()
    for a, b in ranges:
        s.update(range(a, b, PAGE))
    return s


def region_pages(w, ranges):
    """indices of main-region pages contained in ranges"""
    out = set()
    lo, hi = w.base, w.base + w.size
    for a, b in ranges:
        a2, b2 = max(a, lo), min(b, hi)
        if a2 < b2:
            out.update(range((a2 - lo) // PAGE, (b2 - lo) // PAGE))
    return out


def base_page(i):
    return struct.pack("<512Q", *[(i * 1000003 + j) & 0xFFFFFFFFFFFFFFFF for j in range(512)])


class Model:
    """Expected content of the workload's main region."""

    def __init__(self):
        self.mods = {}

    def write(self, seed, idxs):
        for i in idxs:
            self.mods.setdefault(i, {})[(i * 31 + seed) % 512] = (seed << 32) | i

    def page(self, i):
        b = bytearray(base_page(i))
        for word, val in self.mods.get(i, {}).items():
            struct.pack_into("<Q", b, word * 8, val)
        return bytes(b)


def status_field(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    return None


def uffd_wp_vmas(pid):
    """number of VMAs flagged 'uw' (userfaultfd write-protect) in smaps"""
    n = 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line.startswith("VmFlags:") and " uw" in (" " + line.split(":", 1)[1]):
                n += 1
    return n


def tids(pid):
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


# --------------------------------------------------------------------------- tests

@test
def t1_exactness_and_read():
    """(1) exact dirty sets over several rounds, (2) read returns the exact bytes"""
    w = Workload("--mib", "64")
    h = Helper()
    m = Model()
    try:
        r, _ = h.req({"cmd": "attach", "pids": [w.pid]})
        check(r.get("ok") and len(r["mms"]) == 1, "attach single process", str(r))
        mm = r["mms"][0]
        check(mm["stop_us"] < 50000, "target stopped < 50 ms during injection (load-dependent)",
              f"{mm['stop_us']} us")
        check(mm["via_vdso"], "syscall gadget found in [vdso] (no text poke)")
        check(status_field(w.pid, "TracerPid") == "0", "target untraced right after attach")
        check(uffd_wp_vmas(w.pid) > 0, "VMAs carry the uffd-wp flag (smaps 'uw')", str(uffd_wp_vmas(w.pid)))

        r, d = h.req({"cmd": "scan", "first": True})
        recs = parse_scan(d)
        got = region_pages(w, recs[w.pid])
        check(r["ok"] and got == set(range(w.npages)), "first scan reports every present page of the region",
              f"{len(got)}/{w.npages}, total {r['pages']}")
        check(r["pages"] == sum(len(pages_of(v)) for v in recs.values()), "scan 'pages' equals the records")

        r, d = h.req({"cmd": "scan"})
        recs = parse_scan(d)
        check(not region_pages(w, recs[w.pid]), "no writes -> no region pages reported",
              f"{r['pages']} pages elsewhere")

        rnd = random.Random(1)
        extras_seen = []
        all_ok = True
        for rnd_no, k in enumerate([1, 7, 300, 4000, 16384, 50]):
            idx = sorted(rnd.sample(range(w.npages), k))
            seed = 100 + rnd_no
            # send in chunks (one command line stays small)
            for c in range(0, len(idx), 2000):
                assert w.cmd(f"w {seed} " + " ".join(map(str, idx[c:c + 2000]))) == "ok"
            m.write(seed, idx)
            r, d = h.req({"cmd": "scan", "first": False})
            recs = parse_scan(d)
            got = region_pages(w, recs[w.pid])
            want = set(idx)
            missed, extra_in_region = want - got, got - want
            extras = pages_of(recs[w.pid]) - {w.base + i * PAGE for i in want}
            extras_seen.append(len(extras))
            ok = not missed and not extra_in_region
            all_ok &= ok
            check(ok, f"round {rnd_no}: {k} written pages reported exactly",
                  f"missed {len(missed)}, extra in region {len(extra_in_region)}, outside {len(extras)}, "
                  f"scan {r['scan_us']} us")
        NUMBERS["extras_outside_region_per_round"] = extras_seen
        log(f"  info: pages reported outside the written set per round (stack, libc data, stdio buffers): {extras_seen}")

        # (2) read: written pages, untouched pages, one big range; bytes must match the model
        sample = sorted(rnd.sample(range(w.npages), 200))
        ranges = [[w.base + i * PAGE, w.base + (i + 1) * PAGE] for i in sample]
        r, d = h.req({"cmd": "read", "pid": w.pid, "ranges": ranges})
        exp = b"".join(m.page(i) for i in sample)
        check(r["ok"] and r["missing"] == [] and d == exp, "read: 200 scattered pages byte-exact",
              f"{len(d)} bytes")
        r, d = h.req({"cmd": "read", "pid": w.pid, "ranges": [[w.base, w.base + 4096 * 1024]]})
        exp = b"".join(m.page(i) for i in range(1024))
        check(r["ok"] and d == exp, "read: one 4 MiB range byte-exact")
        # request order is kept, overlapping ranges allowed
        rr = [[w.base + 5 * PAGE, w.base + 6 * PAGE], [w.base, w.base + 2 * PAGE], [w.base + 5 * PAGE, w.base + 6 * PAGE]]
        r, d = h.req({"cmd": "read", "pid": w.pid, "ranges": rr})
        check(d == m.page(5) + m.page(0) + m.page(1) + m.page(5), "read: data in request order")

        # missing pages: a hole in a fresh mapping; PROT_NONE pages are still readable
        a, sz = map(int, w.cmd("mmap 1").split()[1:3])
        assert w.cmd(f"munmap {a + PAGE} {PAGE}") == "ok"
        assert w.cmd(f"prot {a + 2 * PAGE} {PAGE} 0") == "ok"
        r, d = h.req({"cmd": "read", "pid": w.pid, "ranges": [[a, a + 4 * PAGE]]})
        check(r["ok"] and r["missing"] == [[a + PAGE, a + 2 * PAGE]] and len(d) == 3 * PAGE
              and d[0] == 1 and d[PAGE] == 3 and d[2 * PAGE] == 3,  # workload writes (page|1)
              "read: unmapped page reported missing, PROT_NONE page read via /proc/PID/mem",
              f"missing {r.get('missing')}, {len(d)} bytes")
        # limits
        r, _ = h.req({"cmd": "read", "pid": w.pid, "ranges": [[w.base, w.base + (64 << 20) + PAGE]]})
        check(not r["ok"] and r["code"] == "E_BAD_REQUEST", "read: > 64 MiB refused with E_BAD_REQUEST")
        r, d = h.req({"cmd": "read", "pid": w.pid, "ranges": [[w.base, w.base + (64 << 20)]]})
        check(r["ok"] and len(d) == 64 << 20 and d[:PAGE] == m.page(0), "read: exactly 64 MiB accepted")
        r, _ = h.req({"cmd": "read", "pid": w.pid, "ranges": [[w.base + 1, w.base + PAGE]]})
        check(not r["ok"] and r["code"] == "E_BAD_REQUEST", "read: unaligned range refused")
        check(w.cmd("check") == "ok", "target still healthy")
    finally:
        h.close()
        w.kill()


@test
def t2_multiprocess_multithread():
    """(3) fork + threads: one uffd per mm, writes from any thread, per-process records"""
    w = Workload("--mib", "16", "--threads", "4", "--sleepers", "2")
    child = FifoChild(w)
    h = Helper()
    try:
        ts = tids(w.pid)
        check(len(ts) == 7, "workload has 7 threads", str(ts))
        worker_tid = ts[1]
        # pass a non-leader thread first: the injection then runs in that (blocked) thread
        r, _ = h.req({"cmd": "attach", "pids": [worker_tid] + ts + [child.pid]})
        check(r.get("ok") and len(r["mms"]) == 2, "7 threads + forked child -> 2 mms", json.dumps(r)[:300])
        byp = {mm["pid"]: mm for mm in r["mms"]}
        check(set(byp) == {w.pid, child.pid}, "mms named by tgid")
        check(byp[w.pid]["tid"] == worker_tid and sorted(byp[w.pid]["pids"]) == ts,
              "injection ran in the non-leader thread; all tids grouped")
        r, _ = h.req({"cmd": "attach", "pids": [w.pid]})
        check(r["ok"] and r["mms"][0]["new"] is False, "attach of an already tracked pid is a no-op")

        r, d = h.req({"cmd": "scan", "first": True})
        recs = parse_scan(d)
        check(set(recs) == {w.pid, child.pid} and region_pages(w, recs[w.pid]) == set(range(w.npages))
              and region_pages(w, recs[child.pid]) == set(range(w.npages)),
              "first scan: both processes report their full region")
        ok = True
        for rnd_no in range(3):
            pw = {k: sorted(random.sample(range(w.npages), 20)) for k in range(4)}
            cw = sorted(random.sample(range(w.npages), 30))
            for k in range(4):
                assert w.cmd(f"tw {k} {rnd_no + 1} " + " ".join(map(str, pw[k]))) == "ok"
            assert child.cmd(f"w {rnd_no + 7} " + " ".join(map(str, cw))) == "ok"
            r, d = h.req({"cmd": "scan"})
            recs = parse_scan(d)
            want_p = set().union(*pw.values())
            gp, gc = region_pages(w, recs[w.pid]), region_pages(w, recs[child.pid])
            ok &= check(gp == want_p and gc == set(cw),
                        f"round {rnd_no}: writes of 4 threads and of the child attributed exactly",
                        f"parent missed {len(want_p - gp)} extra {len(gp - want_p)}; "
                        f"child missed {len(set(cw) - gc)} extra {len(gc - set(cw))}")
        # sleeper threads keep their own pages dirty: they must show up every round
        check(r["pages"] >= len(want_p) + len(cw) + 2, "sleeper threads' pages reported too",
              f"{r['pages']} pages")
        for k in range(4):
            assert w.cmd(f"tw {k} 99 1") == "ok"
        check(w.cmd("check") == "ok" and child.cmd("check") == "ok", "all threads still responsive (restarted syscalls)")

        # a process forked after attach is a new mm: it is tracked only once attached
        c2 = FifoChild(w)
        try:
            r, d = h.req({"cmd": "scan"})
            check(c2.pid not in parse_scan(d), "child forked after attach is not tracked implicitly")
            r, _ = h.req({"cmd": "attach", "pids": [c2.pid]})
            check(r["ok"] and r["mms"][0]["new"], "attach of the new child")
            r, d = h.req({"cmd": "scan"})
            assert c2.cmd("w 5 3 4") == "ok"
            r, d = h.req({"cmd": "scan"})
            check(region_pages(w, parse_scan(d)[c2.pid]) == {3, 4}, "new child's writes tracked")
        finally:
            c2.close()
        r, d = h.req({"cmd": "scan"})
        check(r["ok"] and c2.pid in r["exited"], "killed child reported in exited", str(r.get("exited")))
    finally:
        h.close()
        child.close()
        w.kill()


@test
def t3_growth_and_new_mappings():
    """(4) new mappings, heap growth, remapped ranges are reported in full"""
    w = Workload("--mib", "4")
    h = Helper()
    try:
        h.req({"cmd": "attach", "pids": [w.pid]})
        h.req({"cmd": "scan", "first": True})
        h.req({"cmd": "scan"})
        a, sz = map(int, w.cmd("mmap 8").split()[1:3])
        b, bsz = map(int, w.cmd("sbrk 512").split()[1:3])
        r, d = h.req({"cmd": "scan"})
        got = pages_of(parse_scan(d)[w.pid])
        newmap = set(range(a, a + sz, PAGE))
        brk = set(range(b & ~(PAGE - 1), (b + bsz + PAGE - 1) & ~(PAGE - 1), PAGE))
        check(newmap <= got, "new 8 MiB mapping reported in full", f"{len(newmap & got)}/{len(newmap)}")
        check(brk <= got, "heap growth (sbrk 512 KiB) reported in full", f"{len(brk & got)}/{len(brk)}")
        r, d = h.req({"cmd": "scan"})
        check(not (pages_of(parse_scan(d)[w.pid]) & newmap), "new mapping is armed: quiet next round")
        assert w.cmd(f"wa {a + 10 * PAGE} {a + 2047 * PAGE}") == "ok"
        r, d = h.req({"cmd": "scan"})
        check(pages_of(parse_scan(d)[w.pid]) & newmap == {a + 10 * PAGE, a + 2047 * PAGE},
              "writes in the new mapping tracked exactly")
        # same range unmapped and mapped again (unregistered VMA with identical bounds)
        assert w.cmd(f"remap {a} {sz}") == "ok"
        r, d = h.req({"cmd": "scan"})
        check(r["ok"] and newmap <= pages_of(parse_scan(d)[w.pid]), "re-mapped range (same bounds) reported in full",
              f"{r.get('pages')} pages")
        assert w.cmd(f"wa {a + 5 * PAGE}") == "ok"
        r, d = h.req({"cmd": "scan"})
        check(pages_of(parse_scan(d)[w.pid]) & newmap == {a + 5 * PAGE}, "re-mapped range is tracked again")
        # removed mapping: dropped without error
        assert w.cmd(f"munmap {a} {sz}") == "ok"
        r, d = h.req({"cmd": "scan"})
        check(r["ok"] and not (pages_of(parse_scan(d)[w.pid]) & newmap), "unmapped range dropped silently")
        # mprotect read-only then writable again, written in between scans: still tracked
        assert w.cmd(f"prot {w.base} {w.size} 1") == "ok"
        h.req({"cmd": "scan"})
        assert w.cmd(f"prot {w.base} {w.size} 3") == "ok"
        assert w.cmd("w 3 9 10") == "ok"
        assert w.cmd(f"prot {w.base} {w.size} 1") == "ok"
        r, d = h.req({"cmd": "scan"})
        check(region_pages(w, parse_scan(d)[w.pid]) == {9, 10}, "write during a brief rw window of a r/o VMA caught")
        # THP region: a write dirties the whole 2 MiB huge page (documented granularity)
        t, tsz = map(int, w.cmd("mmapthp 4").split()[1:3])
        h.req({"cmd": "scan"})
        h.req({"cmd": "scan"})
        assert w.cmd(f"wa {t + 3 * PAGE}") == "ok"
        r, d = h.req({"cmd": "scan"})
        tp = pages_of(parse_scan(d)[w.pid]) & set(range(t, t + tsz, PAGE))
        check(t + 3 * PAGE in tp, "THP region: written page reported", f"{len(tp)} pages reported for 1 write")
        NUMBERS["thp_pages_per_write"] = len(tp)
    finally:
        h.close()
        w.kill()


@test
def t4_release_and_criu():
    """(5) release: untraced, running, no uffd-wp left; CRIU can dump"""
    w = Workload("--mib", "8")
    h = Helper()
    try:
        h.req({"cmd": "attach", "pids": [w.pid]})
        h.req({"cmd": "scan", "first": True})
        assert w.cmd("w 1 1 2 3") == "ok"
        h.req({"cmd": "scan"})
        r, _ = h.req({"cmd": "release"})
        check(r["ok"] and r["released"] == 1, "release", str(r))
        r, _ = h.req({"cmd": "release"})
        check(r["ok"] and r["released"] == 0, "release is idempotent")
        r, _ = h.req({"cmd": "scan"})
        check(not r["ok"] and r["code"] == "E_NOT_TRACKING", "scan after release -> E_NOT_TRACKING")
        check(status_field(w.pid, "TracerPid") == "0", "TracerPid 0 after release")
        check(status_field(w.pid, "State")[0] in "SR", "target running (S/R)", status_field(w.pid, "State"))
        check(uffd_wp_vmas(w.pid) == 0, "no VMA keeps the uffd-wp flag after release")
        check(w.cmd("check") == "ok", "target responsive after release")
        if not os.path.exists(CRIU):
            skip("criu dump --leave-running", f"{CRIU} not found")
        else:
            d = tempfile.mkdtemp(prefix="dtcriu")
            try:
                p = subprocess.run([CRIU, "dump", "--leave-running", "-t", str(w.pid), "-D", d, "--shell-job",
                                    "-o", "dump.log", "-v4"], capture_output=True, text=True, timeout=60)
                tail = ""
                if p.returncode != 0:
                    try:
                        tail = open(os.path.join(d, "dump.log")).read()[-1500:]
                    except OSError:
                        tail = p.stderr[-1500:]
                check(p.returncode == 0, "criu dump --leave-running after release", tail)
                check(w.cmd("check") == "ok" and status_field(w.pid, "TracerPid") == "0",
                      "target still running after the dump")
            finally:
                shutil.rmtree(d, ignore_errors=True)
    finally:
        h.close()
        w.kill()


@test
def t5_errors():
    """(6) error paths"""
    h = Helper()
    try:
        # nonexistent pid
        pid = 4194000
        while os.path.exists(f"/proc/{pid}"):
            pid -= 1
        r, _ = h.req({"cmd": "attach", "pids": [pid]})
        check(not r["ok"] and r["code"] == "E_PTRACE" and r["errno"] == 3, "nonexistent pid -> E_PTRACE errno 3", str(r))
        # malformed input of all kinds; the helper must keep answering
        bad = [b"garbage", b"{", b"[1,2]", b'{"cmd":}', b'{"cmd":"scan",}', b'{"cmd":"nope"}', b'{"cmd":5}',
               b'{"cmd":"attach"}', b'{"cmd":"attach","pids":[]}', b'{"cmd":"attach","pids":["1"]}',
               b'{"cmd":"attach","pids":[-4]}', b'{"cmd":"attach","pids":[1.5]}', b'{"cmd":"scan","first":1}',
               b'{"cmd":"read","pid":1}', b'{"cmd":"read","pid":1,"ranges":[[1]]}', b'{"cmd":"sc\\u0000an"}',
               b'{"cmd":"attach","pids":[99999999999999999999999]}', b'"\\ud800"', b"\x00\xff\xfe",
               b"[" * 5000 + b"]" * 5000, b'{"cmd":"scan"} trailing', b'{"cmd":"scan","first":tru}']
        ok = True
        for b in bad:
            h.send_raw(b + b"\n")
            r, _ = h.reply()
            ok &= (not r["ok"] and r["code"] == "E_BAD_REQUEST") or (r.get("code") == "E_NOT_TRACKING" and b"scan" in b)
            if not ok:
                log(f"  unexpected reply to {b[:60]!r}: {r}")
                break
        check(ok, f"{len(bad)} malformed requests -> E_BAD_REQUEST, no crash")
        h.send_raw(b"x" * (5 << 20) + b"\n")
        r, _ = h.reply()
        check(not r["ok"] and r["code"] == "E_BAD_REQUEST", "5 MiB request line -> E_BAD_REQUEST")
        r, _ = h.req({"cmd": "stats", "id": 42})
        check(r["ok"] and r["id"] == 42 and r["errors"] >= len(bad), "still alive; id echoed", str(r)[:120])
        r, _ = h.req({"cmd": "scan", "first": True})
        check(not r["ok"] and r["code"] == "E_NOT_TRACKING", "scan with nothing attached -> E_NOT_TRACKING")
        r, _ = h.req({"cmd": "read", "pid": os.getpid(), "ranges": [[4096, 8192]]})
        check(not r["ok"] and r["code"] == "E_NOT_TRACKING", "read of an untracked pid -> E_NOT_TRACKING")

        # zombie in the pid list -> reported as exited, others attached
        z = subprocess.Popen(["/bin/true"])
        CLEANUP.append(z)
        time.sleep(0.2)
        w = Workload("--mib", "2")
        r, _ = h.req({"cmd": "attach", "pids": [z.pid, w.pid]})
        check(r["ok"] and r["exited"] == [z.pid] and len(r["mms"]) == 1, "zombie pid -> 'exited', others attached", str(r))
        z.wait()
        h.req({"cmd": "scan", "first": True})
        # target exiting between rounds
        w.p.stdin.write(b"exit\n")
        w.p.stdin.flush()
        w.p.wait(5)
        r, d = h.req({"cmd": "scan"})
        check(r["ok"] and r["exited"] == [w.pid] and d == b"", "target exited between rounds -> exited:[pid]", str(r))
        r, _ = h.req({"cmd": "scan"})
        check(not r["ok"] and r["code"] == "E_NOT_TRACKING", "its tracking is dropped")

        # target calling execve between rounds
        w = Workload("--mib", "2")
        h.req({"cmd": "attach", "pids": [w.pid]})
        h.req({"cmd": "scan", "first": True})
        w.p.stdin.write(b"exec\n")
        w.p.stdin.flush()
        assert read_line(w.p.stdout).startswith(b"ready")
        r, d = h.req({"cmd": "scan"})
        check(r["ok"] and r["execed"] == [w.pid], "target exec'd between rounds -> execed:[pid]", str(r))
        r, _ = h.req({"cmd": "read", "pid": w.pid, "ranges": [[w.base, w.base + PAGE]]})
        check(not r["ok"], "read after exec refused (not tracked any more)", str(r))
        w.kill()

        # a target already traced by someone else: E_PTRACE, and the target is left as it was
        w = Workload("--mib", "2")
        tracer = subprocess.Popen(["strace", "-qq", "-e", "trace=none", "-p", str(w.pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        CLEANUP.append(tracer)
        for _ in range(100):
            if status_field(w.pid, "TracerPid") != "0":
                break
            time.sleep(0.02)
        r, _ = h.req({"cmd": "attach", "pids": [w.pid]})
        check(not r["ok"] and r["code"] == "E_PTRACE" and r["errno"] == 1, "already-traced target -> E_PTRACE EPERM",
              str(r))
        tracer.send_signal(signal.SIGINT)
        tracer.wait(5)
        check(w.cmd("check") == "ok", "that target still runs")

        # SIGSTOPped target: attach works and it stays stopped
        os.kill(w.pid, signal.SIGSTOP)
        time.sleep(0.1)
        r, _ = h.req({"cmd": "attach", "pids": [w.pid]})
        st = status_field(w.pid, "State")
        check(r["ok"] and st.startswith("T"), "attach to a SIGSTOPped process keeps it stopped", f"{st} {r}")
        os.kill(w.pid, signal.SIGCONT)
        check(w.cmd("check") == "ok", "continues after SIGCONT")
        # the final-round order: freeze (here SIGSTOP) -> scan -> release, all while stopped
        h.req({"cmd": "scan", "first": True})
        assert w.cmd("w 2 5 6") == "ok"
        os.kill(w.pid, signal.SIGSTOP)
        time.sleep(0.05)
        r, d = h.req({"cmd": "scan"})
        r2, _ = h.req({"cmd": "release"})
        st = status_field(w.pid, "State")
        check(r["ok"] and region_pages(w, parse_scan(d)[w.pid]) == {5, 6} and r2["ok"] and st.startswith("T")
              and uffd_wp_vmas(w.pid) == 0, "scan + release on a stopped target (final-round order)", st)
        os.kill(w.pid, signal.SIGCONT)
        check(w.cmd("check") == "ok", "continues after SIGCONT")
        w.kill()

        # container-like target: seccomp denies userfaultfd, no capabilities
        w = Workload("--mib", "4", "--harden")
        check(status_field(w.pid, "Seccomp") == "2" and status_field(w.pid, "CapEff") == "0000000000000000",
              "hardened workload: seccomp filter + no capabilities")
        r, _ = h.req({"cmd": "attach", "pids": [w.pid]})
        check(r["ok"] and r["mms"][0]["seccomp_suspended"] and r["mms"][0]["user_mode_only"],
              "hardened target attached (PTRACE_O_SUSPEND_SECCOMP + UFFD_USER_MODE_ONLY)", str(r))
        h.req({"cmd": "scan", "first": True})
        assert w.cmd("w 1 2 3") == "ok"
        r, d = h.req({"cmd": "scan"})
        check(region_pages(w, parse_scan(d)[w.pid]) == {2, 3}, "hardened target tracked exactly")
        h.req({"cmd": "release"})
        # same target, helper without CAP_SYS_ADMIN: seccomp cannot be suspended
        if shutil.which("setpriv"):
            h2 = Helper(prefix=["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--"])
            r, _ = h2.req({"cmd": "attach", "pids": [w.pid]})
            check(not r["ok"] and r["code"] == "E_UFFD" and r["errno"] == 1,
                  "helper without CAP_SYS_ADMIN vs seccomp'd target -> E_UFFD EPERM", str(r))
            check(status_field(w.pid, "TracerPid") == "0" and w.cmd("check") == "ok",
                  "failed injection left the target untraced and running")
            h2.close()
        w.kill()
    finally:
        h.close()


@test
def t5b_shared_mm_and_unstoppable():
    """(3)/(6) CLONE_VM siblings share one uffd; a task that cannot be stopped times out and is detached later"""
    w = Workload("--mib", "4")
    h = Helper()
    try:
        c = int(w.cmd("clonevm").split()[1])
        r, _ = h.req({"cmd": "attach", "pids": [w.pid, c]})
        check(r["ok"] and len(r["mms"]) == 1 and sorted(r["mms"][0]["pids"]) == sorted([w.pid, c]),
              "CLONE_VM sibling (other tgid) grouped into one mm via kcmp", json.dumps(r)[:200])
        h.req({"cmd": "scan", "first": True})
        assert w.cmd("w 4 7") == "ok"
        r, d = h.req({"cmd": "scan"})
        recs = parse_scan(d)
        check(list(recs) == [w.pid] and region_pages(w, recs[w.pid]) == {7}, "one record for the shared mm")
        r, d = h.req({"cmd": "read", "pid": c, "ranges": [[w.base + 7 * PAGE, w.base + 8 * PAGE]]})
        check(r["ok"] and r["pid"] == w.pid and len(d) == PAGE, "read by the sibling's pid")
        os.kill(c, signal.SIGKILL)
        h.req({"cmd": "release"})

        # leader thread exited (zombie), the process lives on in another thread
        w2 = Workload("--mib", "4")
        try:
            assert w2.cmd("leaderexit") == "ok"
            time.sleep(0.1)
            check(status_field(w2.pid, "State")[0] == "Z", "workload leader thread is a zombie")
            r, _ = h.req({"cmd": "attach", "pids": [w2.pid]})
            check(r["ok"] and len(r["mms"]) == 1 and r["mms"][0]["tid"] != w2.pid and not r["exited"],
                  "process with a zombie leader attached through a live thread", str(r)[:200])
            h.req({"cmd": "scan", "first": True})
            assert w2.cmd("w 3 11 12") == "ok"
            r, d = h.req({"cmd": "scan"})
            check(region_pages(w2, parse_scan(d)[w2.pid]) == {11, 12}, "its writes are tracked")
            r, d = h.req({"cmd": "read", "pid": w2.pid, "ranges": [[w2.base + 11 * PAGE, w2.base + 12 * PAGE]]})
            m = Model()
            m.write(3, [11, 12])
            check(r["ok"] and d == m.page(11), "and read (via /proc/PID/task/TID/mem)")
            h.req({"cmd": "release"})
        finally:
            w2.kill()

        # vfork parent: in a killable (not interruptible) sleep until its child exits
        w.p.stdin.write(b"vfork 4\n")
        w.p.stdin.flush()
        time.sleep(0.3)
        t0 = time.time()
        r, _ = h.req({"cmd": "attach", "pids": [w.pid]})
        el = time.time() - t0
        check(not r["ok"] and r["code"] == "E_PTRACE" and r["errno"] == 110 and el < 4,
              "task that cannot stop -> E_PTRACE ETIMEDOUT after ~2 s", f"{el:.1f} s {r}")
        r, _ = h.req({"cmd": "stats"})
        check(r["pending_detach"] == 1, "it is remembered for a deferred detach")
        line = read_line(w.p.stdout, 10).decode()  # the vfork child exits after 4 s, the parent resumes
        time.sleep(0.3)
        r, _ = h.req({"cmd": "stats"})
        check(line.startswith("ok") and r["pending_detach"] == 0 and status_field(w.pid, "TracerPid") == "0",
              "once it stopped it was detached", f"{line} {r['pending_detach']}")
        check(w.cmd("check") == "ok", "and it runs normally")
    finally:
        h.close()
        w.kill()


@test
def t6_helper_death():
    """(6) SIGKILL of the helper ends tracking by itself; SIGTERM releases and exits 0"""
    w = Workload("--mib", "8", "--threads", "2")
    try:
        h = Helper()
        h.req({"cmd": "attach", "pids": [w.pid]})
        h.req({"cmd": "scan", "first": True})
        check(uffd_wp_vmas(w.pid) > 0, "tracking active")
        os.kill(h.p.pid, signal.SIGKILL)
        h.p.wait()
        time.sleep(0.05)
        check(uffd_wp_vmas(w.pid) == 0, "after SIGKILL of the helper no uffd-wp VMA remains")
        check(status_field(w.pid, "TracerPid") == "0" and w.cmd("check") == "ok" and w.cmd("tw 1 1 1") == "ok",
              "target untraced and running after helper SIGKILL")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            h = Helper()
            h.req({"cmd": "attach", "pids": [w.pid]})
            os.kill(h.p.pid, sig)
            rc = h.p.wait(5)
            check(rc == 0 and uffd_wp_vmas(w.pid) == 0, f"{sig.name}: helper releases and exits 0", f"rc={rc}")
        h = Helper()
        h.req({"cmd": "attach", "pids": [w.pid]})
        h.p.stdin.close()
        rc = h.p.wait(5)
        check(rc == 0 and uffd_wp_vmas(w.pid) == 0, "EOF on stdin: helper releases and exits 0")
        check(w.cmd("check") == "ok", "target fine after all that")
    finally:
        w.kill()


@test
def t7_performance():
    """(7) 1 GiB: first/steady scan time, read throughput, first-write overhead"""
    w = Workload("--mib", "1024")
    h = Helper()
    try:
        # untracked first-write baseline: pages already populated, no tracking
        n_touch = 65536
        w.cmd(f"touch {n_touch} 1")
        base_ns = min(int(w.cmd(f"touch {n_touch} 1").split()[1]) for _ in range(3))
        base_rand = int(w.cmd("rand 500").split()[1]) / 0.5

        r, _ = h.req({"cmd": "attach", "pids": [w.pid]})
        NUMBERS["attach_stop_us"] = r["mms"][0]["stop_us"]
        t0 = time.perf_counter()
        r, d = h.req({"cmd": "scan", "first": True})
        NUMBERS["first_scan_ms"] = r["scan_us"] / 1000
        NUMBERS["first_scan_pages"] = r["pages"]
        check(r["pages"] >= 262144, "1 GiB first scan covers >= 262144 pages", str(r["pages"]))
        quiet = []
        for _ in range(5):
            r, d = h.req({"cmd": "scan"})
            quiet.append(r["scan_us"] / 1000)
        NUMBERS["steady_scan_ms_no_writes"] = sorted(quiet)[len(quiet) // 2]
        dirty = []
        for k in range(3):
            idx = random.sample(range(w.npages), 10000)
            for c in range(0, 10000, 2500):
                w.cmd(f"w {k + 1} " + " ".join(map(str, idx[c:c + 2500])))
            r, d = h.req({"cmd": "scan"})
            dirty.append(r["scan_us"] / 1000)
            check(region_pages(w, parse_scan(d)[w.pid]) == set(idx), f"1 GiB round {k}: 10000 random pages exact")
        NUMBERS["steady_scan_ms_10k_dirty"] = sorted(dirty)[1]

        # read the whole 1 GiB in 64 MiB requests
        chunk = 64 << 20
        t0 = time.perf_counter()
        internal_us = 0
        total = 0
        for off in range(0, w.size, chunk):
            r, n = h.req_discard({"cmd": "read", "pid": w.pid, "ranges": [[w.base + off, w.base + off + chunk]]},
                                 timeout=60)
            internal_us += r["read_us"]
            total += n
        el = time.perf_counter() - t0
        check(total == w.size, "read 1 GiB in 64 MiB requests")
        NUMBERS["read_GBps_end_to_end"] = total / el / 1e9
        NUMBERS["read_GBps_helper_internal"] = total / (internal_us / 1e6) / 1e9
        # scattered pages: 16384 single-page ranges per request
        idx = sorted(random.sample(range(w.npages), 16384))
        t0 = time.perf_counter()
        r, n = h.req_discard({"cmd": "read", "pid": w.pid,
                              "ranges": [[w.base + i * PAGE, w.base + (i + 1) * PAGE] for i in idx]})
        el = time.perf_counter() - t0
        NUMBERS["read_GBps_scattered_4k_end_to_end"] = n / el / 1e9
        NUMBERS["read_GBps_scattered_4k_internal"] = n / (r["read_us"] / 1e6) / 1e9

        # first-write overhead: touch pages right after a scan re-armed them
        tracked = []
        for _ in range(3):
            h.req({"cmd": "scan"})
            tracked.append(int(w.cmd(f"touch {n_touch} 1").split()[1]))
        tr_ns = min(tracked)
        NUMBERS["first_write_ns_untracked"] = base_ns / n_touch
        NUMBERS["first_write_ns_tracked"] = tr_ns / n_touch
        NUMBERS["first_write_overhead_us"] = (tr_ns - base_ns) / n_touch / 1000
        r, d = h.req({"cmd": "scan"})
        check(r["pages"] >= n_touch, "touched pages all reported", str(r["pages"]))

        # random writes over 1 GiB while a scanner re-arms every 100 ms
        stop = threading.Event()
        scans = []

        def scanner():
            while not stop.is_set():
                rr, _ = h.req({"cmd": "scan"})
                scans.append((rr["scan_us"], rr["pages"]))
                time.sleep(0.1)

        th = threading.Thread(target=scanner)
        th.start()
        tr_rand = int(w.cmd("rand 1000").split()[1]) / 1.0
        stop.set()
        th.join()
        NUMBERS["random_writes_per_s_untracked"] = base_rand
        NUMBERS["random_writes_per_s_tracked_100ms_rounds"] = tr_rand
        NUMBERS["scan_ms_under_random_writes"] = sorted(s for s, _ in scans)[len(scans) // 2] / 1000
        NUMBERS["dirty_pages_per_100ms_round"] = sorted(p for _, p in scans)[len(scans) // 2]
        check(w.cmd("check") == "ok", "1 GiB workload still healthy")
    finally:
        h.close()
        w.kill()


def main():
    if os.geteuid() != 0:
        log("must run as root")
        print("0 passed, 1 failed")
        return 1
    t_start = time.time()
    for fn in TESTS:
        if ONLY and ONLY not in fn.__name__:
            continue
        log(f"== {fn.__name__}: {fn.__doc__}")
        t0 = time.time()
        try:
            fn()
        except Exception as ex:  # a crashed test is a failure, never a hang
            import traceback
            traceback.print_exc()
            check(False, f"{fn.__name__} raised {type(ex).__name__}: {ex}")
        log(f"   ({time.time() - t0:.1f} s)")
    for p in CLEANUP:
        if p.poll() is None:
            p.kill()
            p.wait()
    if STOPS:
        st = sorted(STOPS)
        NUMBERS["injection_stop_us_median"] = st[len(st) // 2]
        NUMBERS["injection_stop_us_max"] = st[-1]
        NUMBERS["injections"] = len(st)
    if NUMBERS:
        log("== numbers")
        for k, v in NUMBERS.items():
            log(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
    log(f"== total {time.time() - t_start:.1f} s")
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed", flush=True)
    return 0 if RESULTS["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
