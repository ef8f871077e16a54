"""Life cycle of real control planes: `respool dev up/status/kubeconfig/bin/down` (a whole
cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok), and test-owned
planes dying with the process that started them.

These start their own control planes (not the session's), so they exercise the same code path
a user and the pytest fixture take, from cold process start to clean shutdown.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from respool.devcluster import BINARIES, DEFAULT_VERSIONS
from respool.devcluster.controlplane import STATE_FILE, pid_alive

pytestmark = pytest.mark.e2e


def _respool(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "respool.cli.main", "dev", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def _wait_gone(pids: list[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(pid) for pid in pids):
            return
        time.sleep(0.2)
    raise AssertionError(f"processes still alive after {timeout}s: {[p for p in pids if pid_alive(p)]}")


def test_dev_commands_full_cycle(tmp_path: Path) -> None:
    env = dict(os.environ, RESPOOL_DEV_HOME=str(tmp_path / "dev"))
    try:
        first = _respool("up", "--nodes", "2", env=env)
        assert first.returncode == 0, first.stderr
        assert "started in" in first.stderr
        assert "2 simulated Node(s) Ready (2 new): node-[0-1]" in first.stderr

        status = _respool("status", "--json", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["running"] is True
        assert report["versions"]["kubernetes"] == DEFAULT_VERSIONS.kubernetes
        assert list(report["processes"]) == [
            "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
        ]
        assert all(process["alive"] for process in report["processes"].values())
        assert report["down"] == []
        pids = [process["pid"] for process in report["processes"].values()]
        assert report["etcd_data"].startswith("/dev/shm/") or not Path("/dev/shm").is_dir()
        text = _respool("status", env=env).stdout
        for name in report["processes"]:
            assert f"{name}:" in text and f"pid {report['processes'][name]['pid']}" in text

        # Idempotent: a second `up` reuses the running plane; named Nodes are added to it.
        again = _respool("up", "--nodes", "2", "--node", "rack-x[1-2]", env=env)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stderr
        assert "4 simulated Node(s) Ready (2 new)" in again.stderr
        report_again = json.loads(_respool("status", "--json", env=env).stdout)
        assert [p["pid"] for p in report_again["processes"].values()] == pids

        kubeconfig = _respool("kubeconfig", env=env)
        assert kubeconfig.returncode == 0
        kubeconfig_path = Path(kubeconfig.stdout.strip())
        assert kubeconfig_path == tmp_path / "dev" / "kubeconfig"

        bin_dir = Path(_respool("bin", env=env).stdout.strip())
        assert all(os.access(bin_dir / name, os.X_OK) for name in BINARIES)

        kubectl_env = dict(env, KUBECONFIG=str(kubeconfig_path))
        namespaces = subprocess.run(
            [str(bin_dir / "kubectl"), "get", "namespace", "default", "-o", "name"],
            capture_output=True,
            text=True,
            env=kubectl_env,
            timeout=60,
            check=False,
        )
        assert namespaces.returncode == 0, namespaces.stderr
        assert namespaces.stdout.strip() == "namespace/default"
        nodes = subprocess.run(
            [str(bin_dir / "kubectl"), "get", "nodes", "-o",
             "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=='Ready')].status} {end}"],
            capture_output=True,
            text=True,
            env=kubectl_env,
            timeout=60,
            check=False,
        )
        assert nodes.returncode == 0, nodes.stderr
        assert sorted(nodes.stdout.split()) == ["node-0=True", "node-1=True", "rack-x1=True", "rack-x2=True"]
        helm = subprocess.run(
            [str(bin_dir / "helm"), "list", "--all-namespaces"],
            capture_output=True,
            text=True,
            env=kubectl_env,
            timeout=60,
            check=False,
        )
        assert helm.returncode == 0, helm.stderr

        down = _respool("down", env=env)
        assert down.returncode == 0
        assert "stopped" in down.stderr
        _wait_gone(pids)
        assert not Path(report["etcd_data"]).exists()
        after = _respool("status", env=env)
        assert after.returncode == 3
        assert "stopped" in after.stdout
    finally:
        _respool("down", env=env)


def test_dev_up_restarts_a_plane_whose_processes_died(tmp_path: Path) -> None:
    env = dict(os.environ, RESPOOL_DEV_HOME=str(tmp_path / "dev"))
    try:
        assert _respool("up", env=env).returncode == 0
        report = json.loads(_respool("status", "--json", env=env).stdout)

        # A crashed component: status names it (and only it) and points at its log...
        kwok_pid = report["processes"]["kwok"]["pid"]
        os.kill(kwok_pid, signal.SIGKILL)
        _wait_gone([kwok_pid])
        crashed = _respool("status", env=env)
        assert crashed.returncode == 3
        assert "unhealthy (kwok not running)" in crashed.stdout
        assert re.search(rf"kwok:\s+DOWN, pid {kwok_pid} \(log .*kwok\.log\)", crashed.stdout), crashed.stdout
        assert re.search(r"kube-scheduler:\s+running", crashed.stdout), crashed.stdout
        assert json.loads(_respool("status", "--json", env=env).stdout)["down"] == ["kwok"]
        # ...and `up` starts just that one again: the API server and its objects stay.
        kubeconfig = str(tmp_path / "dev" / "kubeconfig")
        kubectl = [str(Path(report["bin_dir"]) / "kubectl"), f"--kubeconfig={kubeconfig}"]
        subprocess.run([*kubectl, "create", "namespace", "survivor"], check=True, timeout=60,
                       capture_output=True)
        fixed = _respool("up", "--nodes", "1", env=env)
        assert fixed.returncode == 0, fixed.stderr
        assert "started kwok again" in fixed.stderr
        after = json.loads(_respool("status", "--json", env=env).stdout)
        assert after["running"] is True
        assert after["processes"]["kube-apiserver"]["pid"] == report["processes"]["kube-apiserver"]["pid"]
        assert after["processes"]["kwok"]["pid"] != kwok_pid
        subprocess.run([*kubectl, "get", "namespace", "survivor"], check=True, timeout=60, capture_output=True)
        report = after

        apiserver_pid = report["processes"]["kube-apiserver"]["pid"]
        os.kill(apiserver_pid, signal.SIGKILL)
        _wait_gone([apiserver_pid])

        broken = _respool("status", env=env)
        assert broken.returncode == 3
        assert "unhealthy (kube-apiserver not running)" in broken.stdout

        restarted = _respool("up", env=env)
        assert restarted.returncode == 0, restarted.stderr
        assert "cleaning it up and starting anew" in restarted.stderr
        assert json.loads(_respool("status", "--json", env=env).stdout)["running"] is True
        # etcd and the components of the broken plane were stopped, not leaked.
        _wait_gone([p["pid"] for name, p in report["processes"].items() if name != "kube-apiserver"])
    finally:
        _respool("down", env=env)


def test_test_owned_plane_dies_with_its_parent(tmp_path: Path) -> None:
    """A pytest session killed with SIGKILL must not leave etcd/kube-apiserver behind."""
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from respool.devcluster import ControlPlane
        plane = ControlPlane({str(tmp_path / "plane")!r}, die_with_parent=True)
        plane.start()
        print(json.dumps([plane.state.etcd_pid, plane.state.apiserver_pid, plane.state.etcd_data]), flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line, "the child did not start its control plane"
        etcd_pid, apiserver_pid, etcd_data = json.loads(line)
        assert pid_alive(etcd_pid) and pid_alive(apiserver_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        _wait_gone([etcd_pid, apiserver_pid])
        # Nobody was left to remove etcd's tmpfs data; the next start's sweep would, after a
        # grace period. Remove it here so the test leaves nothing behind.
        shutil.rmtree(etcd_data)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _sigint_deliverable() -> None:
    """preexec_fn: SIGINT at its default and unblocked in the inner session, whatever this
    process inherited (an ignored or blocked SIGINT survives exec; Python then never raises
    KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _signal_state(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError as error:
        return f"unreadable ({error})"
    wanted = ("State:", "SigPnd:", "ShdPnd:", "SigBlk:", "SigIgn:", "SigCgt:", "Threads:")
    return " ".join(line for line in status if line.startswith(wanted)) + f" wchan={wchan}"


def test_ctrl_c_in_pytest_stops_the_session_plane(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) during a test: pytest's teardown stops the session's control plane."""
    pids_file = tmp_path / "pids.json"
    test_file = tmp_path / "test_interrupted.py"
    test_file.write_text(
        textwrap.dedent(
            f"""
            import json, pathlib, time

            def test_waits_for_interrupt(control_plane):
                state = control_plane.plane.state
                pathlib.Path({str(pids_file)!r}).write_text(
                    json.dumps([state.etcd_pid, state.apiserver_pid, state.etcd_data])
                )
                time.sleep(600)
            """
        )
    )
    tests_dir = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tests_dir), os.environ.get("PYTHONPATH", "")]))
    env.pop("RESPOOL_TEST_KUBECONFIG", None)
    session = subprocess.Popen(
        # Our conftest loaded as a plugin: the same fixtures, in a separate pytest session.
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(test_file)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_sigint_deliverable,
    )
    try:
        deadline = time.monotonic() + 240
        while not pids_file.exists():
            assert session.poll() is None, f"pytest ended early:\n{session.communicate()[0]}"
            assert time.monotonic() < deadline, "the inner session did not start its plane"
            time.sleep(0.5)
        time.sleep(0.5)  # the file is written in one call; let the writer finish
        etcd_pid, apiserver_pid, etcd_data = json.loads(pids_file.read_text())
        assert pid_alive(etcd_pid) and pid_alive(apiserver_pid)
        session.send_signal(signal.SIGINT)
        try:
            output, _ = session.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            # Evidence for a rare full-suite failure (also seen with the Go-built etcd): is
            # SIGINT pending, blocked or ignored in the inner session, and where does it wait?
            signals = _signal_state(session.pid)
            session.kill()
            output = session.communicate()[0]
            raise AssertionError(
                f"pytest did not end within 120 s of SIGINT; its signal state: {signals}\n{output}"
            ) from None
        assert "KeyboardInterrupt" in output
        _wait_gone([etcd_pid, apiserver_pid], timeout=10)
        assert not Path(etcd_data).exists()
    finally:
        if session.poll() is None:
            session.kill()
            session.communicate()


def test_a_failing_apiserver_is_reported_and_cleaned_up(tmp_path: Path) -> None:
    """kube-apiserver dying at start: a StartError with its log, and nothing left running."""
    from respool.devcluster import ControlPlane, StartError, ensure_binaries

    real = ensure_binaries()
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "etcd").symlink_to(real / "etcd")
    (fake_bin / "kube-apiserver").write_text("#!/bin/sh\necho 'E1121 boom: cannot start' >&2\nexit 7\n")
    (fake_bin / "kube-apiserver").chmod(0o755)
    plane = ControlPlane(tmp_path / "plane", bin_dir=fake_bin, start_timeout=60)
    with pytest.raises(StartError, match=r"(?s)kube-apiserver exited with status 7.*boom: cannot start"):
        plane.start()
    assert plane.state is None
    assert not (tmp_path / "plane" / STATE_FILE).exists()
    leftovers = [
        pid
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit())
        if pid_alive(pid, str(tmp_path))
    ]
    assert leftovers == [], "etcd was left running after the failed start"


def test_a_component_failing_to_start_is_named_and_the_whole_cluster_cleaned_up(tmp_path: Path) -> None:
    """kwok dying at start on a whole cluster: a StartError naming it with its log, and
    nothing of the cluster (etcd, kube-apiserver, controller-manager, scheduler) left running."""
    from respool.devcluster import ControlPlane, StartError, ensure_binaries

    real = ensure_binaries()
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name in BINARIES:
        if name != "kwok":
            (fake_bin / name).symlink_to(real / name)
    (fake_bin / "kwok").write_text("#!/bin/sh\necho 'kwok: cannot simulate anything today' >&2\nexit 3\n")
    (fake_bin / "kwok").chmod(0o755)
    # etcd's data under tmp_path too, so that every process's command line names tmp_path.
    (tmp_path / "etcd").mkdir()
    plane = ControlPlane(tmp_path / "plane", bin_dir=fake_bin, start_timeout=120, whole_cluster=True,
                         etcd_data_root=tmp_path / "etcd")
    with pytest.raises(StartError, match=r"(?s)kwok exited with status 3 while starting.*cannot simulate anything"):
        plane.start()
    assert plane.state is None
    assert not (tmp_path / "plane" / STATE_FILE).exists()
    deadline = time.monotonic() + 30
    leftovers: list[int] = [0]
    while leftovers and time.monotonic() < deadline:
        leftovers = [
            pid
            for pid in (int(p) for p in os.listdir("/proc") if p.isdigit())
            if pid_alive(pid, str(tmp_path))
        ]
        time.sleep(0.2)
    assert leftovers == [], "processes of the failed cluster were left running"
