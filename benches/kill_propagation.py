#!/usr/bin/env python3
"""Kill-switch propagation across nodes: two `mandate serve` processes share one PostgreSQL
database and one Redis; a stream of introspections runs against node B while agents are killed
on node A; each kill's latency is the time from sending the kill to node B's first `active:
false`. Prints p50/p99/max and `N passed, N failed` (a kill not seen within --deadline fails).

    python3 benches/kill_propagation.py [--count 100] [--bin target/release/mandate]
        [--pg postgres://postgres@127.0.0.1:5432/postgres] [--redis redis://127.0.0.1:6379/]

Standard library only. It creates (and drops) its own database and uses its own Redis key prefix.
"""
import argparse, base64, http.client, json, os, secrets, shutil, socket, statistics, subprocess
import sys, tempfile, threading, time, urllib.parse

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

class Client:
    """A keep-alive HTTP/1.1 connection to one node."""
    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    def call(self, method, path, body=None, headers=None, form=None):
        headers = dict(headers or {})
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            body = json.dumps(body); headers["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse(); data = r.read()
                return r.status, (json.loads(data) if data else None)
            except (http.client.HTTPException, OSError):
                self.conn.close(); self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                if attempt: raise

def basic(cid, secret):
    q = lambda s: urllib.parse.quote_plus(s, safe="")
    return "Basic " + base64.b64encode(f"{q(cid)}:{q(secret)}".encode()).decode()

def wait_ready(port, proc, log):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"node on {port} exited:\n" + open(log).read()[-2000:])
        try:
            if Client(port).call("GET", "/readyz")[0] == 200: return
        except OSError: pass
        time.sleep(0.05)
    sys.exit(f"node on {port} not ready")

def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--bin", default=os.path.join(root, "target/release/mandate"))
    ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/")
    ap.add_argument("--deadline", type=float, default=2.0, help="seconds a kill may take to be seen")
    a = ap.parse_args()

    db = "killbench_" + secrets.token_hex(4)
    admin_url = urllib.parse.urlparse(a.pg)
    psql = ["psql", "-h", admin_url.hostname, "-p", str(admin_url.port or 5432), "-U", admin_url.username or "postgres", "-d", admin_url.path.lstrip("/") or "postgres", "-qc"]
    subprocess.run(psql + [f"CREATE DATABASE {db}"], check=True)
    db_url = a.pg.rsplit("/", 1)[0] + "/" + db
    work = tempfile.mkdtemp(prefix="mandate-kill-")
    pa, pb = free_port(), free_port()
    env = dict(os.environ, MANDATE_DATABASE_URL=db_url, MANDATE_REDIS_URL=a.redis,
               MANDATE_REDIS_PREFIX=f"kb{secrets.token_hex(4)}:", MANDATE_LOG_LEVEL="warn",
               MANDATE_KEY_ENCRYPTION_KEY=base64.b64encode(os.urandom(32)).decode(),
               MANDATE_ISSUER=f"http://127.0.0.1:{pa}", MANDATE_DATA_DIR=work)
    procs = []
    try:
        for port in (pa, pb):
            log = os.path.join(work, f"node-{port}.log")
            procs.append(subprocess.Popen([a.bin, "serve", "--listen", f"127.0.0.1:{port}"], env=env,
                                          stdout=open(log, "w"), stderr=subprocess.STDOUT))
            wait_ready(port, procs[-1], log)
        cli = lambda *args: json.loads(subprocess.run([a.bin, *args, "--json"], env=env, check=True,
                                                      capture_output=True, text=True).stdout)
        srv = cli("servers", "add", "--uri", "https://kill.bench.test/mcp", "--name", "kb", "--env", "prod",
                  "--tool", "search:read:internal")
        admin = {"Authorization": "Bearer " + cli("admin", "token")["token"]}
        A, B = Client(pa), Client(pb)
        srv_auth = {"Authorization": basic(srv["client_id"], srv["client_secret"])}
        time.sleep(1.5)  # both nodes pick up the CLI's registrations
        latencies, failed = [], 0
        for i in range(a.count):
            st, ag = A.call("POST", "/admin/v1/agents", {"name": f"kb{i}", "owner": "ops@example.com",
                            "environment": "prod", "allowed_resources": ["https://kill.bench.test/mcp"],
                            "scope_ceiling": ["tools:read"]}, admin)
            assert st == 201, (st, ag)
            st, tok = A.call("POST", "/token", headers={"Authorization": basic(ag["client_id"], ag["client_secret"])},
                             form={"grant_type": "client_credentials"})
            assert st == 200, (st, tok)
            form = {"token": tok["access_token"]}
            seen_active = False
            for _ in range(500):
                if B.call("POST", "/introspect", headers=srv_auth, form=form)[1]["active"]:
                    seen_active = True; break
                time.sleep(0.002)
            assert seen_active, "node B never saw the new agent's token as active"
            stop, result = threading.Event(), {}
            def watch():
                c = Client(pb)
                while not stop.is_set():
                    if not c.call("POST", "/introspect", headers=srv_auth, form=form)[1]["active"]:
                        result["t"] = time.perf_counter(); return
            w = threading.Thread(target=watch); w.start()
            time.sleep(0.005)
            t0 = time.perf_counter()
            st, _ = A.call("POST", f"/admin/v1/agents/{ag['client_id']}/kill", headers=admin)
            assert st == 200, st
            w.join(a.deadline); stop.set(); w.join()
            if "t" in result:
                latencies.append((result["t"] - t0) * 1000)
            else:
                failed += 1
                print(f"FAIL kill {i}: node B still active after {a.deadline}s", flush=True)
        if latencies:
            print(f"kill -> inactive on the other node over {len(latencies)} kills: "
                  f"p50 {pct(latencies, 50):.1f} ms  p99 {pct(latencies, 99):.1f} ms  max {max(latencies):.1f} ms")
        print(f"{len(latencies)} passed, {failed} failed")
        return 1 if failed or not latencies else 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try: p.wait(5)
            except subprocess.TimeoutExpired: p.kill()
        subprocess.run(psql + [f"DROP DATABASE IF EXISTS {db}"], check=False)
        shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
