"""The image table: which local program stands in for each container image.

Nothing can be pulled here, so an image repository maps to a program on this machine, together with what
its image would set: entrypoint, default command, user, environment and working directory. The tag and
digest are ignored. An image that is not in the table is not run: its container waits with the reason
`ImageNotRunnableLocally`, as a kubelet's container waits after a failed pull.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO_ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = REPO_ROOT / ".venv" / "bin"

# The repositories the project's own images are published under, and the names a local
# `docker build -t` gives them (see sender_image/Dockerfile).
SENDER_IMAGES = ("ghcr.io/mailtrain-operator/sender", "mailtrain-sender")
OPERATOR_IMAGES = ("ghcr.io/mailtrain-operator/operator", "mailtrain-operator")

# The official redis image's docker-entrypoint.sh: arguments that start with "-" (or name a .conf
# file) are options for redis-server, so `args: [--port, "6380"]` works as it does there. That image's
# redis-server is also built with protected mode off, so without a config file it answers clients on
# any address; Debian's binary is told so on its command line (a config file still decides for itself).
_REDIS_ENTRYPOINT = (
    "/bin/sh",
    "-c",
    '''if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then set -- redis-server "$@"; fi
if [ "$1" = redis-server ] && { [ $# -eq 1 ] || [ "${2#-}" != "$2" ]; }; then
  shift; set -- redis-server --protected-mode no "$@"
fi
exec "$@"''',
    "docker-entrypoint.sh",
)


@dataclass(frozen=True)
class LocalImage:
    repositories: tuple[str, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    user: tuple[int, int] = (0, 0)  # the image's USER, as uid and gid
    env: Mapping[str, str] = field(default_factory=lambda: {"PATH": DEFAULT_PATH})
    # None: a private writable directory per container, standing in for the image's root filesystem.
    working_dir: str | None = None
    # Directories the program needs whatever user it runs as, and whatever is mounted above them: an
    # image has its own interpreter and files, but here the venv's interpreter may sit in a directory
    # only root may enter (pyenv's under /root, mode 0700), and the checkout with the venv under /tmp,
    # where each container has a private /tmp.
    readable: tuple[str, ...] = ()

    def missing_program(self, argv: list[str], env: Mapping[str, str]) -> str | None:
        """Why argv[0] cannot run here, or None. Checked before starting, so the reason is a status."""
        program = argv[0] if argv else ""
        if not program:
            return "the container has no command and its image no entrypoint"
        found = program if "/" in program else shutil.which(program, path=env.get("PATH", DEFAULT_PATH))
        if found is None or not Path(found).is_file():
            return f"{program} is not installed on this machine"
        return None


def python_home() -> str:
    """The installation the venv's interpreter comes from (pyvenv.cfg's `home` is its bin directory)."""
    for line in (VENV_BIN.parent / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return str(Path(value.strip()).parent)
    return sys.base_prefix


def default_images() -> list[LocalImage]:
    python = (python_home(), str(REPO_ROOT))
    python_env = {
        "PATH": f"{VENV_BIN}:{DEFAULT_PATH}",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return [
        LocalImage(
            SENDER_IMAGES,
            entrypoint=(str(VENV_BIN / "mailtrain-sender"),),
            cmd=("--config", "/etc/mailtrain/sender.toml"),
            user=(10001, 10001),
            env=python_env,
            readable=python,
        ),
        LocalImage(
            OPERATOR_IMAGES,
            entrypoint=(str(VENV_BIN / "mailtrain-operator"),),
            user=(10001, 10001),
            env=python_env,
            readable=python,
        ),
        LocalImage(("docker.io/library/redis",), entrypoint=_REDIS_ENTRYPOINT, cmd=("redis-server",)),
    ]


def load_images(path: Path) -> list[LocalImage]:
    """Extra images from a TOML file: [[image]] tables with the fields of LocalImage."""
    data = tomllib.loads(path.read_text())
    return [_image_from_table(table) for table in data.get("image", [])]


def _image_from_table(table: dict[str, Any]) -> LocalImage:
    user = table.get("user", [0, 0])
    return LocalImage(
        repositories=tuple(normalize(r) for r in table["repositories"]),
        entrypoint=tuple(table.get("entrypoint", ())),
        cmd=tuple(table.get("cmd", ())),
        user=(int(user[0]), int(user[1])),
        env={"PATH": DEFAULT_PATH, **table.get("env", {})},
        working_dir=table.get("working_dir"),
        readable=tuple(table.get("readable", ())),
    )


def normalize(reference: str) -> str:
    """`redis:7` -> `docker.io/library/redis`: the repository, as docker names it, without tag or digest."""
    name = reference.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return f"{domain}/{path}"


class ImageTable:
    def __init__(self, images: Iterable[LocalImage]) -> None:
        self._by_repository: dict[str, LocalImage] = {}
        for image in images:
            for repository in image.repositories:
                self._by_repository[normalize(repository)] = image

    def resolve(self, reference: str) -> LocalImage | None:
        return self._by_repository.get(normalize(reference))

    def known(self) -> list[str]:
        return sorted(self._by_repository)


def container_argv(image: LocalImage, container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """The process's argv, by Kubernetes' rules: `command` replaces the entrypoint and drops the image's
    default command; `args` replaces the default command; both expand $(VAR) from the container's env."""
    command = container.get("command")
    args = container.get("args")
    argv = [*command, *(args or [])] if command else [*image.entrypoint, *(args or image.cmd)]
    return [expand(str(part), env) for part in argv]


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: `$$` is a literal `$`; an unknown $(VAR) is left as it is."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(" and (close := text.find(")", i + 2)) != -1:
            name = text[i + 2 : close]
            out.append(env.get(name, f"$({name})"))
            i = close + 1
        else:
            out.append("$" + following)
            i += 2
    return "".join(out)
