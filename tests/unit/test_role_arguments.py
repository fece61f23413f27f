"""roles/pyserf's entry checks, run on the controller alone (no host is touched).

Which check catches a bad value matters: meta/argument_specs.yml rejects what it can express
(choices, a list where a map belongs, a non-int), and tasks/assert.yml only what it cannot (strict
types, and that the wheel install is told where the wheels come from: the role has no default
for that). Each host below is the controller under another name, with one bad setting.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))

pytestmark = pytest.mark.skipif(
    not Path(PLAYBOOK).exists() and shutil.which("ansible-playbook") is None,
    reason="ansible-core is not installed (scripts/bootstrap --lab)",
)

# host -> inventory vars; every host but ok_* sets one bad or missing value.
MAIN_CASES = {
    "no_wheel_source": "",
    "ok_prebuilt": "pyserf_wheel_dir=/srv/wheels pyserf_build_wheels=false",
    "no_source_dir": "pyserf_wheel_dir=/srv/wheels",
    "ok_pip": "pyserf_install_method=pip",
    "bad_method": "pyserf_install_method=conda",
    "tags_list": "pyserf_install_method=pip pyserf_tags='[\"role=web\"]'",
    "tags_string": "pyserf_install_method=pip pyserf_tags=role=web",
    "join_string": "pyserf_install_method=pip pyserf_retry_join=a,b",
    "extra_list": "pyserf_install_method=pip pyserf_extra_config='[\"profile\"]'",
    "ok_scripts_hosts": "pyserf_install_method=pip "
    "pyserf_handler_scripts='[{\"name\": \"a.sh\", \"content\": \"x\"}]' "
    "pyserf_hosts_file='{\"path\": \"/etc/hosts\", \"domain\": \"lan\"}'",
    "script_path_name": "pyserf_install_method=pip "
    "pyserf_handler_scripts='[{\"name\": \"../a.sh\", \"content\": \"x\"}]'",
    "script_no_body": "pyserf_install_method=pip pyserf_handler_scripts='[{\"name\": \"a.sh\"}]'",
    "hosts_relative": "pyserf_install_method=pip pyserf_hosts_file='{\"path\": \"hosts\"}'",
    "ok_http": "pyserf_install_method=pip pyserf_http_addr=[::1]:8500 pyserf_http_token=s3cret "
    "pyserf_http_tls_cert=/etc/pyserf/c.pem pyserf_http_tls_key=/etc/pyserf/k.pem",
    "http_port_only": "pyserf_install_method=pip pyserf_http_addr=8500",
    "http_token_no_addr": "pyserf_install_method=pip pyserf_http_token=s3cret",
    "http_cert_no_key": "pyserf_install_method=pip pyserf_http_addr=127.0.0.1:8500 "
    "pyserf_http_tls_cert=/etc/pyserf/c.pem",
    "ok_telemetry": "pyserf_install_method=pip pyserf_statsd_addr=127.0.0.1:8125 "
    "pyserf_statsite_addr=[::1]:8125",
    "statsd_port_only": "pyserf_install_method=pip pyserf_statsd_addr=8125",
}
VERIFY_CASES = {"verify_bad_retries": "pyserf_verify_retries=many"}
FAILED_LINE = re.compile(
    r"^(?:fatal|failed): \[([^\]]+)\](?: \(item=[^)]*\))?(?:: FAILED!)? => (\{.*\})$", re.M)
RECAP_LINE = re.compile(r"^(\S+)\s+: ok=\d+ .*?failed=(\d+)", re.M)

PLAYBOOK_TEXT = f"""
- name: The role's main entry point, its checks only (run with --tags pyserf_assert)
  hosts: main
  gather_facts: false
  roles:
    - role: {REPO}/roles/pyserf
- name: The role's verify entry point
  hosts: verify
  gather_facts: false
  tasks:
    - name: Verify
      ansible.builtin.include_role:
        name: {REPO}/roles/pyserf
        tasks_from: verify
      tags: [always]
"""


@pytest.fixture(scope="module")
def first_failure(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """Host -> the message of its first failed task (None: every check passed)."""
    tmp = tmp_path_factory.mktemp("role-args")
    local = f"ansible_connection=local ansible_python_interpreter={sys.executable}"
    lines = ["[main]"] + [f"{h} {local} {v}" for h, v in MAIN_CASES.items()]
    lines += ["[verify]"] + [f"{h} {local} {v}" for h, v in VERIFY_CASES.items()]
    (tmp / "inventory.ini").write_text("\n".join(lines) + "\n")
    (tmp / "play.yml").write_text(PLAYBOOK_TEXT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    # One JSON object per failed result, on the line that names the host.
    env.update(ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_CALLBACK_FORMAT_PRETTY="false",
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp / "tmp"),
               ANSIBLE_HOME=str(tmp / "home"))
    res = subprocess.run(
        [PLAYBOOK if Path(PLAYBOOK).exists() else "ansible-playbook", "-i",
         str(tmp / "inventory.ini"), "--tags", "pyserf_assert", str(tmp / "play.yml")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp, check=False)
    failures: dict[str, str | None] = {h: None for h in MAIN_CASES | VERIFY_CASES}
    for m in FAILED_LINE.finditer(res.stdout):
        if failures[m[1]] is None:
            result = json.loads(m[2])
            failures[m[1]] = f"{result.get('msg', '')} {result.get('argument_errors', '')}"
    recap = dict(RECAP_LINE.findall(res.stdout))
    assert set(recap) == set(failures), res.stdout[-3000:] + res.stderr[-2000:]
    # The recap agrees: exactly the hosts with a failure message failed.
    assert {h for h, n in recap.items() if n != "0"} == {h for h, f in failures.items() if f}
    return failures


@pytest.mark.parametrize("host", ["ok_prebuilt", "ok_pip", "ok_scripts_hosts", "ok_http",
                                  "ok_telemetry"])
def test_complete_settings_pass(first_failure: dict[str, str | None], host: str) -> None:
    assert first_failure[host] is None


def test_wheel_source_has_no_default(first_failure: dict[str, str | None]) -> None:
    msg = first_failure["no_wheel_source"]
    assert msg is not None and "pyserf_install_method: wheel needs pyserf_wheel_dir" in msg
    assert "pyserf_source_dir" in msg and "The role has no default for them" in msg


def test_building_wheels_needs_the_source_dir(first_failure: dict[str, str | None]) -> None:
    msg = first_failure["no_source_dir"]
    assert msg is not None and "with pyserf_build_wheels: true, pyserf_source_dir" in msg


@pytest.mark.parametrize(
    ("host", "spec_message"),
    [
        ("bad_method", "value of pyserf_install_method must be one of: wheel, pip, got: conda"),
        ("tags_list",
         "argument 'pyserf_tags' is of type list and we were unable to convert to dict"),
        ("extra_list",
         "argument 'pyserf_extra_config' is of type list and we were unable to convert to dict"),
        ("verify_bad_retries",
         "argument 'pyserf_verify_retries' is of type str and we were unable to convert to int"),
    ],
)
def test_argument_spec_rejects(
    first_failure: dict[str, str | None], host: str, spec_message: str
) -> None:
    """What assert.yml no longer checks itself, the spec does."""
    msg = first_failure[host]
    assert msg is not None and spec_message in msg, msg


@pytest.mark.parametrize(
    ("host", "assert_message"),
    [
        ("tags_string", 'pyserf_tags must be a map of string keys to string values'),
        ("join_string", 'pyserf_retry_join must be a list of strings, got "a,b"'),
        ("script_path_name", "each pyserf_handler_scripts entry needs a plain file name"),
        ("script_no_body", "each pyserf_handler_scripts entry needs a plain file name"),
        ("hosts_relative", "pyserf_hosts_file must be {} (off) or a map with an absolute path"),
        ("http_port_only", 'pyserf_http_addr must be "" (off) or host:port'),
        ("http_token_no_addr", 'pyserf_http_addr must be "" (off) or host:port'),
        ("http_cert_no_key", 'pyserf_http_addr must be "" (off) or host:port'),
        ("statsd_port_only", 'pyserf_statsd_addr and pyserf_statsite_addr must be "" (off)'),
    ],
)
def test_assert_catches_what_the_spec_lets_through(
    first_failure: dict[str, str | None], host: str, assert_message: str
) -> None:
    """The spec only checks that "role=web" converts to a map and "a,b" to a list; the role
    would then use the string, so assert.yml keeps these checks."""
    msg = first_failure[host]
    assert msg is not None and assert_message in msg, msg
    assert "Validation of arguments failed" not in msg
