"""`ray up` / `ray exec` / `ray down` with cluster-local.yaml, for real: Ray's local node provider
reaching this machine over SSH (an sshd of the test's own on 127.0.0.1, a key made here) as a
dedicated unprivileged user, `mgcnode`.

The config is cluster-local.yaml with the lab's placeholders filled in (head 127.0.0.1, no
workers, that user and key), /mnt/shared in that user's home, free ports for the head, and
three test-only additions: the SSH port (a ProxyCommand: the launcher has no port setting),
`~/mgc/.venv` linked to this checkout's .venv (so the file's own `bash setup.sh` finds it
installed and returns at once) and a temporary folder of that user's own for its Ray. The rest,
file mounts, setup and start commands, run as the file has them.

Why a user of its own: `ray down` ends with a bare `ray stop` on the head over SSH (and the
start commands begin with one), which stops every Ray process its user may signal. As root it
would stop every Ray on the machine; as `mgcnode` it can stop only the cluster's. The test
checks that: a root Ray started before `ray up` is alive after `ray down`, and neither `ray stop`
(`ray up`'s, `ray down`'s) stopped any other user's Ray node running here.

Needs root (to create the user and run sshd), openssh-server, openssh-client and rsync, and
acl where this .venv's Python lives in a folder closed to other users (pyenv under /root): the
user then gets a traverse-only ACL entry on it for the test, removed at the end. .ci/run
installs them; the test skips and says why without them.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from raynodes import RayNodes, free_port, listens

REPO = Path(__file__).resolve().parents[1]
LOCAL_YAML = REPO / "cluster-local.yaml"
USER = "mgcnode"
SSHD = "/usr/sbin/sshd"
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
# The node daemons a bare `ray stop` ends first (matched as `ray stop` matches them: by name).
DAEMONS = ("raylet", "gcs_server")

pytestmark = pytest.mark.slow

# A ProxyCommand: ssh's connection to host argv[1], port argv[2], over stdin/stdout.
RELAY = """\
import os, socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while data := os.read(0, 65536):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := s.recv(65536):
    os.write(1, data)
"""


def processes() -> dict[int, tuple[int, int, str, str, int]]:
    """{pid: (uid, parent pid, name, command line, start time)} of every process, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            # The name may hold spaces and parentheses: the fields after the last ")".
            stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
        name = re.search(r"^Name:\s+(.*)$", status, re.M).group(1)
        found[int(entry.name)] = (uid, int(stat_fields[1]), name, cmdline, int(stat_fields[19]))
    return found


def ray_daemons(exclude_uid: int) -> dict[int, int]:
    """{pid: start time} of the Ray node daemons (raylet, gcs_server) of every other user."""
    return {
        pid: started
        for pid, (uid, _, name, _, started) in processes().items()
        if uid != exclude_uid and name in DAEMONS
    }


def user_ray_processes(uid: int) -> list[str]:
    """The Ray processes of user `uid` (what a `ray stop` of that user would look for)."""
    return [
        f"{pid} {cmd[:120]}"
        for pid, (owner, _, name, cmd, _) in processes().items()
        if owner == uid and (name in DAEMONS or name.startswith("ray::") or "/ray/" in cmd)
    ]


def alive(pid: int, started: int) -> bool:
    info = processes().get(pid)
    return info is not None and info[4] == started


def untouched(before: dict[int, int], output: str) -> None:
    """Every Ray daemon of another user running before a launcher command that ran `ray stop`
    (its `output`) is alive, or that `ray stop` said it could not terminate it (this machine
    may run other tests, whose Ray nodes come and go on their own)."""
    gone = [
        pid
        for pid, started in before.items()
        if not alive(pid, started) and f"(pid={pid}," not in output
    ]
    assert not gone, f"Ray daemons of other users gone after `ray stop` as {USER}: {gone}"


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def as_user(pw: pwd.struct_passwd, *cmd: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            list(cmd),
            user=pw.pw_uid,
            group=pw.pw_gid,
            extra_groups=[],
            env={"HOME": pw.pw_dir, "PATH": "/usr/bin:/bin"},
            cwd="/",
            capture_output=True,
            text=True,
        )
    except OSError as e:  # the program itself out of its reach
        return subprocess.CompletedProcess(cmd, 126, "", str(e))


def the_user() -> pwd.struct_passwd:
    """The node user, created when missing; skips when that cannot be done."""
    missing = [p for p in (SSHD, "ssh", "ssh-keygen", "rsync") if not shutil.which(p)]
    if missing:
        pytest.skip(
            f"`ray up` over SSH needs {', '.join(missing)}: "
            "apt-get install openssh-server openssh-client rsync (.ci/run does)"
        )
    if os.geteuid() != 0:
        pytest.skip(
            f"`ray up` over SSH needs root: it runs an sshd of its own and the nodes' Ray as "
            f"the unprivileged user {USER}, which it creates (as this user, the `ray stop` of "
            "`ray down` would stop this user's other Ray)"
        )
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        out = subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/bash", USER],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            pytest.skip(f"could not create the user {USER}: {out.stderr.strip()}")
        pw = pwd.getpwnam(USER)
    if pw.pw_uid == 0:
        pytest.fail(f"{USER} has uid 0: `ray stop` as it would stop every Ray here")
    # Not a locked account (sshd without PAM refuses those, keys or not); no password either.
    subprocess.run(["usermod", "-p", "*", USER], check=True, capture_output=True)
    return pw


def revoke(granted: list[tuple[Path, bool]]) -> None:
    """Undoes `reach_this_venv`: the folder's ACL as it was."""
    for d, had_acl in granted:
        args = ["-x", f"u:{USER}"] if had_acl else ["-b"]
        subprocess.run(["setfacl", *args, str(d)], check=False)


def reach_this_venv(pw: pwd.struct_passwd) -> list[tuple[Path, bool]]:
    """Lets the user run this checkout's .venv (its Python may live under a 0700 /root): a
    traverse-only ACL entry for it on each folder in the way. Returns those folders."""
    probe = [str(VENV_BIN / "python"), "-c", "import ray, mgc"]
    if as_user(pw, *probe).returncode == 0:
        return []
    paths = {Path(sys.executable).resolve(), Path(sys.base_prefix).resolve(), REPO}
    blocked = sorted(
        {
            d
            for p in paths
            for d in [p, *p.parents]
            if d.is_dir() and not d.stat().st_mode & stat.S_IXOTH
        }
    )
    if not shutil.which("setfacl"):
        pytest.skip(
            f"{USER} cannot run {VENV_BIN}/python ({', '.join(map(str, blocked))} closed to "
            "other users) and setfacl is missing: apt-get install acl (.ci/run does)"
        )
    granted = []
    for d in blocked:
        had_acl = subprocess.run(
            ["getfacl", "--skip-base", "--absolute-names", str(d)], capture_output=True, text=True
        ).stdout.strip()
        subprocess.run(["setfacl", "-m", f"u:{USER}:x", str(d)], check=True)
        granted.append((d, bool(had_acl)))
    out = as_user(pw, *probe)
    if out.returncode != 0:
        revoke(granted)
        pytest.skip(f"{USER} cannot run this checkout's .venv: {out.stderr.strip()[-500:]}")
    return granted


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    if not listens(port, proc, timeout):
        pytest.skip(f"sshd did not start: {log.read_text()[-1000:]}")


def kill_tree(proc: subprocess.Popen) -> None:
    """The sshd started here and every process under it (its sessions)."""
    table = processes()
    tree, grew = {proc.pid}, True
    while grew:
        below = {pid for pid, info in table.items() if info[1] in tree} - tree
        tree |= below
        grew = bool(below)
    for pid in tree - {proc.pid}:
        kill(pid)
    proc.kill()
    proc.wait(timeout=30)


def node_config(
    tmp: Path, pw: pwd.struct_passwd, key: Path, ssh_port: int, shared: Path
) -> tuple[dict, int]:
    """cluster-local.yaml with the lab's parts filled in for this machine, and the head's GCS
    port."""
    cfg = yaml.safe_load(LOCAL_YAML.read_text())
    cfg["cluster_name"] = f"mgc-up-test-{secrets.token_hex(3)}"
    cfg["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    relay = tmp / "relay.py"
    relay.write_text(RELAY)
    cfg["auth"] = {
        "ssh_user": pw.pw_name,
        "ssh_private_key": str(key),
        "ssh_proxy_command": f"{sys.executable} {relay} %h {ssh_port}",
    }

    def shared_folder(cmd: str) -> str:
        return cmd.replace("/mnt/shared", str(shared))

    # This machine's .venv stands for the one `bash setup.sh` builds on a lab machine.
    cfg["setup_commands"] = [f"ln -sfn {REPO / '.venv'} ~/mgc/.venv"] + [
        shared_folder(c) for c in cfg["setup_commands"]
    ]
    assert any("bash setup.sh" in c for c in cfg["setup_commands"])
    gcs_port = free_port()
    ports = (
        f"--port={gcs_port} --dashboard-port={free_port()}"
        f" --ray-client-server-port={free_port()} --dashboard-agent-listen-port={free_port()}"
        f" --metrics-export-port={free_port()} --min-worker-port=0 --max-worker-port=0"
        f" --num-cpus=1 --object-store-memory={100 * 1024 * 1024}"
    )
    head = [shared_folder(c) for c in cfg["head_start_ray_commands"]]
    start = [c for c in head if "--port=6379" in c]
    assert len(start) == 1, "the head's ray start has changed: update this test"
    cfg["head_start_ray_commands"] = [c.replace("--port=6379", ports) for c in head]
    return cfg, gcs_port


def ray_cli(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    out = subprocess.run(
        [RAY, *args],
        cwd=REPO,  # file_mounts "~/mgc": "." is this checkout
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, f"ray {args[0]} failed ({out.returncode}):\n{out.stdout[-4000:]}"
    return out.stdout


def rsync_both_ways(
    env: dict[str, str], cfg_file: Path, shared: Path, tmp: Path, pw: pwd.struct_passwd
) -> None:
    """docs/cluster.md's transfers, with the cluster up: `ray rsync-up CONFIG FILE
    /mnt/shared/FILE` lands the file there as the node user; a row and a table written on the
    head (`ray exec`, as a sweep would) come back with the README's `ray rsync-down CONFIG
    /mnt/shared/results/ ./results/`, trailing slashes and all: the folder's content in
    ./results/, not a results/results/."""
    archive = tmp / "genres.tar.gz"
    archive.write_bytes(secrets.token_bytes(4096))
    ray_cli(env, "rsync-up", str(cfg_file), str(archive), str(shared / archive.name))
    landed = shared / archive.name
    assert landed.read_bytes() == archive.read_bytes() and landed.stat().st_uid == pw.pw_uid

    results = shared / "results"
    write_row = (
        f"mkdir -p {results}/E0 && id -un > {results}/E0/summary.json"
        f" && echo '| E0 | 80.0 |' > {results}/table.md"
    )
    ray_cli(env, "exec", str(cfg_file), write_row)
    local = tmp / "checkout"
    (local / "results").mkdir(parents=True)  # a checkout's results/, as the README has it
    out = subprocess.run(
        [RAY, "rsync-down", str(cfg_file), f"{results}/", "./results/"],
        cwd=local,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, f"ray rsync-down failed:\n{out.stdout[-4000:]}"
    fetched = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    assert fetched == ["results/E0/summary.json", "results/table.md"], fetched
    assert (local / "results" / "E0" / "summary.json").read_text().strip() == USER
    assert (local / "results" / "table.md").read_text() == "| E0 | 80.0 |\n"


def test_ray_up_exec_down_over_ssh(tmp_path: Path):
    t0 = time.monotonic()
    pw = the_user()
    tmp = Path(tempfile.mkdtemp(prefix="mgcup-", dir="/tmp"))
    ray_tmp = Path(tempfile.mkdtemp(prefix="mgcu-", dir="/tmp"))  # short: Ray's socket paths
    os.chown(ray_tmp, pw.pw_uid, pw.pw_gid)
    granted: list[tuple[Path, bool]] = []
    sshd = None
    bystander = None
    control = None
    home = Path(pw.pw_dir)
    try:
        granted = reach_this_venv(pw)
        stamp = REPO / ".venv" / ".mgc-installed"
        want = hashlib.sha1((REPO / "pyproject.toml").read_bytes()).hexdigest()
        if not stamp.is_file() or stamp.read_text().strip() != want:
            pytest.skip(".venv is not set up for this pyproject.toml: run `bash setup.sh`")

        # Keys: the user's (in its authorized_keys) and sshd's host key.
        key = tmp / "id_ed25519"
        host_key = tmp / "host_ed25519"
        for path in (key, host_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True
            )
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
        for path in (home, ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        (ssh_dir / "authorized_keys").chmod(0o600)
        # The user's shell, as the launcher's commands see it (bash -i, ~/.bashrc): its Ray
        # keeps to a temporary folder of its own (the machine's /tmp/ray is root's here).
        skel = Path("/etc/skel/.bashrc")
        bashrc = (skel.read_text() if skel.is_file() else "") + f"export RAY_TMPDIR={ray_tmp}\n"
        (home / ".bashrc").write_text(bashrc)
        os.chown(home / ".bashrc", pw.pw_uid, pw.pw_gid)
        for stale in ("mgc", ".ray", "ray_bootstrap_config.yaml", "ray_bootstrap_key.pem"):
            path = home / stale
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

        # sshd on the loopback, for that user only.
        ssh_port = free_port()
        config = tmp / "sshd_config"
        config.write_text(
            f"Port {ssh_port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"PidFile {tmp / 'sshd.pid'}\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            f"AuthorizedKeysFile .ssh/authorized_keys\nAllowUsers {USER}\n"
            "PermitRootLogin no\nStrictModes yes\nMaxStartups 50\nMaxSessions 50\n"
            "LogLevel VERBOSE\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            pytest.skip(f"sshd cannot run here: {check.stderr.strip()[-1000:]}")
        sshd_log = tmp / "sshd.log"
        with open(sshd_log, "wb") as log:
            sshd = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(ssh_port, sshd, sshd_log)
        login = subprocess.run(
            ["ssh", "-i", str(key), "-p", str(ssh_port), "-o", "BatchMode=yes"]
            + ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
            + ["-o", "IdentitiesOnly=yes", f"{USER}@127.0.0.1", "id -un"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert login.stdout.strip() == USER, f"{login.stderr}\nsshd: {sshd_log.read_text()}"

        # A root Ray on this machine that `ray down` must leave alone, and any others running.
        bystander = RayNodes(tmp_path).start()
        table = processes()
        ours = {
            pid: started
            for pid, started in ray_daemons(exclude_uid=pw.pw_uid).items()
            if str(bystander.temp) in table[pid][3]
        }
        assert ours, "the bystander Ray has no raylet or gcs_server"

        # The launcher's own state (the provider's cluster file, the config cache, the token it
        # copies) in tmp: HOME, TMPDIR.
        local_home = tmp / "home"
        (local_home / ".ray").mkdir(parents=True)
        (local_home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("RAY_") or k == "RAY_USAGE_STATS_ENABLED"
        }
        env.update(
            HOME=str(local_home),
            TMPDIR=str(tmp),
            RAY_USAGE_STATS_ENABLED="0",
            PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        shared = home / "shared"  # the lab's /mnt/shared
        shared.mkdir(exist_ok=True)
        os.chown(shared, pw.pw_uid, pw.pw_gid)
        cfg, gcs_port = node_config(tmp, pw, key, ssh_port, shared)
        cfg_file = tmp / "cluster.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg))
        user_hash = hashlib.sha256(getpass.getuser().encode()).hexdigest()  # ssh ControlPath
        control = (
            Path("/tmp")
            / f"ray_ssh_{user_hash[:10]}"
            / hashlib.sha256(cfg["cluster_name"].encode()).hexdigest()[:10]
        )

        before = ray_daemons(exclude_uid=pw.pw_uid)
        up = ray_cli(env, "up", "-y", "--no-config-cache", str(cfg_file))
        print(up[-1500:])
        untouched(before, up)
        assert (home / "mgc" / "pyproject.toml").is_file()  # the file mount: this checkout
        assert (home / ".ray" / "auth_token").read_text() == (
            local_home / ".ray" / "auth_token"
        ).read_text()
        for sub in ("gtzan", "mgc-cache", "ray_results", "results"):
            assert (shared / sub).is_dir()
        assert user_ray_processes(pw.pw_uid), "no Ray of the node user after `ray up`"

        # The cluster's head by its address (other Rays run here), with the cluster's token.
        probe = (
            f"RAY_AUTH_MODE=token RAY_ADDRESS=127.0.0.1:{gcs_port} "
            "python -c 'import os, pwd, ray; ray.init(); "
            'print("RESOURCES", ray.cluster_resources()); '
            'print("USER", pwd.getpwuid(os.getuid()).pw_name)\''
        )
        out = ray_cli(env, "exec", str(cfg_file), probe)
        print(out[-2000:])
        resources = re.search(r"RESOURCES (\{.*\})", out)
        assert resources, out[-3000:]
        assert "'CPU': 1.0" in resources.group(1)
        assert "'object_store_memory': 104857600.0" in resources.group(1)
        assert f"USER {USER}" in out, out[-3000:]
        rsync_both_ways(env, cfg_file, shared, tmp, pw)

        before = ray_daemons(exclude_uid=pw.pw_uid)
        down = ray_cli(env, "down", "-y", str(cfg_file))
        print(down[-2000:])
        deadline = time.monotonic() + 60
        while (left := user_ray_processes(pw.pw_uid)) and time.monotonic() < deadline:
            time.sleep(1)
        assert not left, f"Ray of {USER} still running after `ray down`: {left}"
        # `ray stop` tried root's Ray too ("Could not terminate ..."), and could not.
        assert "Could not terminate" in down, "`ray stop` on the node saw no other Ray?"
        untouched(before, down)
        gone = [pid for pid, started in ours.items() if not alive(pid, started)]
        assert not gone, f"the bystander's Ray daemons {gone} are gone after `ray down`"
        print(
            f"ray up/exec/down: {time.monotonic() - t0:.0f} s; the bystander's {len(ours)} and "
            f"{len(before) - len(ours)} other Ray daemons of other users untouched by `ray down`"
        )
    finally:
        if control is not None and control.is_dir():
            for sock in control.iterdir():  # the launcher's ssh ControlMaster, if still there
                subprocess.run(["ssh", "-S", str(sock), "-O", "exit", "x"], capture_output=True)
            shutil.rmtree(control, ignore_errors=True)
            try:
                control.parent.rmdir()  # when no other cluster of this user has one there
            except OSError:
                pass
        # Whatever of the node user's is left (processes this test made it start).
        for pid, info in processes().items():
            if info[0] == pw.pw_uid:
                kill(pid)
        if sshd is not None:
            kill_tree(sshd)
        if bystander is not None:
            bystander.stop()
        revoke(granted)
        for path in (home / "mgc", home / "shared", home / ".ray"):
            shutil.rmtree(path, ignore_errors=True)
        for name in ("ray_bootstrap_config.yaml", "ray_bootstrap_key.pem"):
            (home / name).unlink(missing_ok=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
