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


def image_name(step, tag="latest"):
    return f"{REPOSITORY}/{step}:{tag}"


def run(command, **options):
    """Runs `command` from the repository's root; a failure ends the script with its status."""
    print("+ " + " ".join(command), flush=True)
    result = subprocess.run(command, cwd=ROOT, **options)
    if result.returncode != 0:
        sys.exit(f"containers: {command[0]} failed (exit status {result.returncode})")
    return result


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
    compose = compose_command()
    if args.command == "down":
        run(compose + ["down", "--remove-orphans"])
        return
    build()
    if args.command == "up":
        # The images were just built: no second build by compose (v2 would rebuild them).
        os.chdir(ROOT)
        os.execvp(compose[0], compose + ["up", "--no-build"])


if __name__ == "__main__":
    main()
