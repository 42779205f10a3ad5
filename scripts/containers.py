#!/usr/bin/env python3
"""Steps 06 and 07 in containers: static binaries, FROM scratch images, docker-compose.yml.

  build   compiles step06-master-worker and step07-reverse-proxy for x86_64-unknown-linux-musl
          (static: the images hold no libc), with the `container` profile (release, stripped),
          then builds one image of each from containers/Dockerfile:
          fork-to-proxy/step06-master-worker and fork-to-proxy/step07-reverse-proxy
  up      build, then `docker compose up` (or Debian's `docker-compose up`): step 07 on
          http://127.0.0.1:8090 in front of three step 06 containers; Ctrl-C stops them
  down    removes the compose project's containers and networks (the images stay)

Only the two crates the images need are compiled: about a minute and a half on two cores,
where a release build of the whole workspace takes about nine. Nothing is pulled from a
registry. Docker must be running (`dockerd`), with `docker compose` or `docker-compose`.

Examples:
  python3 scripts/containers.py up
  python3 scripts/containers.py build && docker compose up -d && curl -s 127.0.0.1:8090/stats
  docker kill -s HUP "$(docker compose ps -q proxy)"      # reload the proxy's configuration
"""

import argparse
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = "x86_64-unknown-linux-musl"
PROFILE = "container"
# The image names, and the stage of containers/Dockerfile that builds each.
IMAGES = ("step06-master-worker", "step07-reverse-proxy")
REPOSITORY = "fork-to-proxy"
# docker-compose.yml's services, and its stop_grace_period.
SERVICES = ("proxy", "upstream1", "upstream2", "upstream3")
GRACE_S = 15


class DockerError(Exception):
    """A docker or compose command failed; the message says which, and its error."""


def image_name(step, tag="latest"):
    return f"{REPOSITORY}/{step}:{tag}"


def run(command, **options):
    """Runs `command` from the repository's root; a failure ends the script with its status."""
    print("+ " + " ".join(command), flush=True)
    result = subprocess.run(command, cwd=ROOT, **options)
    if result.returncode != 0:
        sys.exit(f"containers: {command[0]} failed (exit status {result.returncode})")
    return result


def docker(*args, check_status=True, timeout=60):
    """`docker ARGS`: its standard output; DockerError when it fails (unless not
    `check_status`)."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check_status and result.returncode != 0:
        raise DockerError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def compose_command():
    """`docker compose` (v2) if the plugin is there, else Debian's `docker-compose` (1.29),
    else None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def docker_missing():
    """Why Docker cannot be used here, or None when it can."""
    if not shutil.which("docker"):
        return "docker is not installed (apt-get install docker.io docker-compose)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker daemon answers (start dockerd)"
    if compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed"
    return None


def build_binaries():
    """The two static binaries, in target/x86_64-unknown-linux-musl/container/."""
    if shutil.which("rustup"):
        run(["rustup", "target", "add", TARGET], capture_output=True)
    command = ["cargo", "build", "--locked", "--profile", PROFILE, "--target", TARGET]
    for step in IMAGES:
        command += ["-p", step]
    run(command)
    return {step: os.path.join(ROOT, "target", TARGET, PROFILE, step) for step in IMAGES}


def build_images(tag="latest", labels=()):
    """One image per step, tagged `tag`, with `labels` ("key=value") on each."""
    names = {}
    for step in IMAGES:
        command = ["docker", "build", "--quiet", "--file", "containers/Dockerfile"]
        command += ["--target", step, "--tag", image_name(step, tag)]
        for label in labels:
            command += ["--label", label]
        run(command + ["."], stdout=subprocess.DEVNULL)
        names[step] = image_name(step, tag)
    return names


def image_size(name):
    """The image's size in bytes, as `docker image ls` counts it."""
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", name],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


class Project:
    """docker-compose.yml run as the compose project `name`, its images tagged `name` too
    (FTP_TAG), the proxy published on 127.0.0.1:`publish` (FTP_PORT: "" for a free port).
    The defaults are what `docker compose up` in the repository gives; the tests run a copy of
    their own."""

    def __init__(self, name=None, publish=None):
        self.name = name
        self.tag = name or "latest"
        self.label = f"fork-to-proxy.test-run={name}"
        self.compose = compose_command()
        self.env = dict(os.environ, FTP_TAG=self.tag)
        if publish is not None:
            self.env["FTP_PORT"] = str(publish)
        # The proxy's port on 127.0.0.1, once it is up.
        self.port = None
        # Container ids by service, kept once read: `compose ps` (v2) lists only running
        # containers, and the tests stop some.
        self.containers = {}

    def command(self, *args):
        project = ["--project-name", self.name] if self.name else []
        return self.compose + project + list(args)

    def run(self, *args, timeout=120):
        """A compose command; its standard output, or DockerError."""
        command = self.command(*args)
        result = subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise DockerError(f"{' '.join(command)}: {result.stderr.strip()}")
        return result.stdout.strip()

    def container(self, service):
        if service not in self.containers:
            ids = self.run("ps", "--quiet", service).split()
            if len(ids) != 1:
                raise DockerError(f"{service}: {len(ids)} containers")
            self.containers[service] = ids[0]
        return self.containers[service]

    def logs(self, service):
        result = subprocess.run(
            ["docker", "logs", self.container(service)], capture_output=True, text=True
        )
        return result.stdout + result.stderr

    def remove_everything(self):
        """`down`, then whatever is left with the project's label, and the images with its
        tag; returns what could not be removed."""
        try:
            self.run("down", "--volumes", "--remove-orphans", "--timeout", str(GRACE_S))
        except (DockerError, subprocess.TimeoutExpired) as error:
            print(f"  compose down: {error}", file=sys.stderr)
        project = f"label=com.docker.compose.project={self.name}"
        left = []
        for kind, lister, remover in (
            ("container", ["ps", "-aq", "--filter", project], ["rm", "-f"]),
            ("network", ["network", "ls", "-q", "--filter", project], ["network", "rm"]),
            ("image", ["image", "ls", "-q", "--filter", f"label={self.label}"], ["rmi", "-f"]),
        ):
            ids = sorted(set(docker(*lister, check_status=False).split()))
            if ids:
                docker(*remover, *ids, check_status=False)
            left += [f"{kind} {i}" for i in docker(*lister, check_status=False).split()]
        for step in IMAGES:
            name = image_name(step, self.tag)
            if docker("image", "ls", "-q", name, check_status=False):
                docker("rmi", "-f", name, check_status=False)
                if docker("image", "ls", "-q", name, check_status=False):
                    left.append(f"image {name}")
        return left


def build():
    build_binaries()
    for name in build_images().values():
        print(f"{name}: {image_size(name) / 1e6:.1f} MB")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["build", "up", "down"])
    args = parser.parse_args()
    why = docker_missing()
    if why is not None:
        sys.exit(f"containers: {why}")
    project = Project()
    if args.command == "down":
        run(project.command("down", "--remove-orphans"))
        return
    build()
    if args.command == "up":
        # The images were just built: no second build by compose (v2 would rebuild them).
        os.chdir(ROOT)
        command = project.command("up", "--no-build")
        os.execvp(command[0], command)


if __name__ == "__main__":
    main()
