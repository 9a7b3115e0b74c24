"""OS inspection from the guest's own files."""

from __future__ import annotations

from imgscan.image.inspect import parse_os_release, parse_passwd
from imgscan.model import OsUser


def test_os_release_quoting() -> None:
    text = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n# x\n'
    values = parse_os_release(text)
    assert values["ID"] == "debian"
    assert values["VERSION_ID"] == "12"
    assert values["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"


def test_passwd_keeps_people_not_services() -> None:
    text = (
        "root:x:0:0:root:/root:/bin/bash\n"
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n"
        "svc:x:1001:1001::/srv:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        "broken line\n"
    )
    assert parse_passwd(text) == (
        OsUser("root", 0, "/root"),
        OsUser("alice", 1000, "/home/alice"),
    )
