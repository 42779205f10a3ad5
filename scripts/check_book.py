#!/usr/bin/env python3
"""The book against the tree and against its data: what a reader copies must exist and run, and
every measured figure must come from a data file that a script wrote.

Three checks, static and fast (a second) unless --run is given:

names    Every name the book sets in `code` in README.md and docs/ must exist: a file or
         directory (`src/zone.rs`, `scripts/fairness.py`), a Rust item (`Queue::push_blocking`,
         `Hook`), a test, a function or a setting (`no_zombie_after_200_connections`,
         `read_timeout_ms`), an option of one of our programs (`--max-children`), an
         exercise (`take-a-slot`), and the scripts and options of inline commands
         (`python3 scripts/fairness.py step04-threadpool -- --workers 100`). A name counts as
         existing when the tree (sources, scripts, configurations; not the book itself)
         defines it or spells it; names of other software (`SO_REUSEPORT`, `pthread_create`,
         `proxy_pass`) are listed in EXTERNAL below. A span in a test table or after the word
         "test" must name a Rust function. Names that a page asks the reader to create (an
         exercise's new option) are declared in the page: `<!-- proposed: --listen-fd -->`.

figures  Every measured figure in the prose of a page, outside code blocks, must be held by a
         data file that the page cites: a number with a thousands separator (`119,372`,
         `109 390`), a ratio (`1.65×`), a throughput (`25 943 req/s`), a time, size or rate
         with its unit (`134 µs`, `75.9 KiB`, `126 MiB`), or seconds with two decimals
         (`20.02 s`), and the first figure of a range (`1.52 to 1.70 s`). "Held" means that
         some number in the data, rounded as printed, gives the same digits: as it is, or
         converted to the printed unit when the data says its own unit (a JSON key `p99_ms`,
         `medians_ns`; `74.0 KiB` in a program's output) and it is the same kind of quantity. A page cites its own data (`docs/NAME.json`
         beside `docs/NAME.md`, written with its generated regions; `docs/data/NAME.json`, its
         experiments' output kept by `scripts/record`), the data of every page it links to
         (`comparison.md` -> `docs/comparison.json`), and the files its `<!-- data: FILE -->`
         comments and its links to `.json` files name (relative to the page). A figure the code fixes (`Duration::
         from_millis(100)` is 100 ms, `64 * 1024` is 64 KiB), or that the page's own commands
         set (`--delay-ms 50`, `/sleep?ms=300`), is a setting and passes. Regions
         between `<!-- unrecorded: begin REASON -->` and `<!-- unrecorded: end -->` are not
         checked: figures whose run was not kept, until they are measured again (--verbose
         counts them).

commands Every shell command a chapter gives (```sh blocks) must run as written and leave the
         checkout clean. Always, statically: the scripts and options exist, the crates and
         tests named with `-p` and `--test` exist, no command assumes `target/release/` (it
         moves with CARGO_TARGET_DIR: `cargo run` finds it), no `kill $(jobs -p)` (it errs
         when a job has already ended). With --run, the chapters' script commands run too,
         in a quick mode (fewer requests, shorter sleeps and runs, the same options
         otherwise), and `git status` must show no file they changed or created.

Examples:
  python3 scripts/check_book.py                # names, figures, commands (static); one line per problem
  python3 scripts/check_book.py --names
  python3 scripts/check_book.py --figures --verbose
  python3 scripts/check_book.py --commands --run   # runs them (quick mode): about two minutes

Exit status: 0 when the book agrees with the tree and the data, 1 otherwise.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = "docs"
SKIP_DIRS = {".git", "target", "__pycache__", "node_modules"}
SOURCE_SUFFIXES = (".rs", ".py", ".toml", ".conf", ".html", ".js", ".txt", ".sh", ".yml", ".json")

# Names of other software that the book sets in code: system calls and C functions, kernel
# settings, nginx and Apache directives, HTTP fields and methods, std and crate items, tools.
# Ours are checked against the tree; these are not ours to check. Keep it to whole names.
EXTERNAL = set("""
abort accept accept4 accept_mutex access_log active_threads aio alarm async await bind
block_on close connect else enum epoll epoll_ctl epoll_wait epoll_create1 errno eventfd exec
execve exit fail_timeout fg fork free getaddrinfo getppid getsockopt get_queue_size
grpc-timeout h2 http2 http2_prior_knowledge hyper impl insert int io_uring ioctl join
keepalive_timeout kevent kqueue let listen localhost location loop main malloc
malloc_consolidate manage_server max_fails memcpy memmove mio mmap mod_php mpsc nix
open_file_cache poll pop posix_spawn prctl println proxy_connect_timeout
proxy_ignore_client_abort proxy_next_upstream proxy_pass proxy_read_timeout pthread_create
pthread_detach pthread_join quic_bpf quiche quinn rate read recv recv_timeout recvfrom
reqwest rt-multi-thread sched_setaffinity select send send_timeout sendfile sendmsg sendto
server.c shutdown sleep socket spawn spawn_blocking strace sysctl tcp_migrate_req
tcp_nodelay thread_id timeout tokio try_clone underscores_in_headers unlink_chunk unsafe
unwrap vfork wait waitpid wasmtime while worker_processes worker_rlimit_nofile write wrk
_exit _int_free _int_malloc send_request crossbeam-channel client_header_timeout
client_body_timeout ThreadsPerChild StartServers MinSpareServers MaxRequestWorkers
MaxConnectionsPerChild ListenBacklog
Arc AsyncFd Backlog BTreeMap Box Condvar ControlMessage Err FnOnce HashMap HeaderMap
JoinHandle Mutex Ok Option PoisonError Receiver Result ScmRights Send Sender Sync
TcpListener TcpStream Url Vec VecDeque Instant Duration ErrorKind Interrupted WouldBlock
std thread process net sync mem sys socket size_of from_raw_fd into_inner sync_channel
forget exit_code new bind clock_gettime ngx_http_upstream_get_peer tcp_max_syn_backlog thread_pool
smaps_rollup somaxconn
Accept Allow Connection Content-Length Content-Type Date ETag Expect Host Keep-Alive
Proxy-Authorization Proxy-Connection Proxy-Authenticate Server TE Trailer Transfer-Encoding
Transfer_Encoding Upgrade Via X-Forwarded-For X-Forwarded-Host X-Forwarded-Proto
If-None-Match User-Agent
CONNECT GET HEAD OPTIONS POST PRI SYN SYN-ACK ACK RST FIN SRV NGINX
""".split())

# Options of other programs (cargo, wrk, curl, ...) that the book sets in code.
EXTERNAL_OPTIONS = {"--nocapture", "--release", "--lib", "--workspace", "--help", "--latency",
                    "--test", "--example", "--locked", "--ppid", "--target", "--features"}


# --- reading the book ----------------------------------------------------------------------


def book_pages(root=ROOT):
    """README.md and every page of docs/, as (path relative to the root, text)."""
    pages = [("README.md", read(os.path.join(root, "README.md")))]
    docs = os.path.join(root, "docs")
    for name in sorted(os.listdir(docs)):
        if name.endswith(".md"):
            pages.append((os.path.join("docs", name), read(os.path.join(docs, name))))
    return pages


def read(path):
    with open(path, encoding="utf-8") as source:
        return source.read()


FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
REGION = re.compile(r"<!-- ([\w-]+): begin -->.*?<!-- \1: end -->", re.S)
SPAN = re.compile(r"(`+)(.+?)\1", re.S)


def blank(text, pattern):
    """`text` with every match of `pattern` replaced by as many newlines: lines keep their numbers."""
    return pattern.sub(lambda match: "\n" * match.group(0).count("\n"), text)


def inline_spans(text):
    """(line, span, the 40 characters before it) for every inline code span outside code blocks."""
    prose = blank(text, FENCE)
    for match in SPAN.finditer(prose):
        line = prose.count("\n", 0, match.start()) + 1
        yield line, match.group(2).strip(), prose[max(0, match.start() - 40):match.start()]


# --- what the tree holds -------------------------------------------------------------------


class Tree:
    """Files, directories, defined Rust items, options and every word of the tree's sources."""

    def __init__(self, root):
        self.root = root
        self.files, self.dirs = set(), set()
        self.words, self.defined, self.functions = set(), set(), set()
        self.options = set()
        self.script_options = {}  # scripts/NAME -> the options its argparse defines
        self.exercises = set()
        me = os.path.abspath(__file__)
        for directory, subdirectories, files in os.walk(root):
            subdirectories[:] = [name for name in subdirectories if name not in SKIP_DIRS]
            relative = os.path.relpath(directory, root)
            if relative != ".":
                self.dirs.add(relative.replace(os.sep, "/"))
            for name in files:
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                self.files.add(rel)
                if rel == "README.md" or rel.startswith("docs/") or os.path.abspath(path) == me:
                    continue
                if rel.startswith("scripts/") and "." not in name or name.endswith(SOURCE_SUFFIXES):
                    try:
                        text = read(path)
                    except (UnicodeDecodeError, OSError):
                        continue
                    self.index(rel, text)

    def index(self, rel, text):
        self.words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
        self.words.update(re.findall(r"[A-Za-z0-9_]+(?:[-.][A-Za-z0-9_]+)+", text))
        if rel.endswith(".rs"):
            for kind, name in re.findall(
                    r"\b(fn|struct|enum|trait|type|const|static|mod|macro_rules!)\s+([A-Za-z_]\w*)", text):
                self.defined.add(name)
                if kind == "fn":
                    self.functions.add(name)
            # enum variants and struct fields: a name at the start of a line, then `,`, `(`,
            # `{` or `:` (approximate, and generous on purpose: it only widens what exists)
            self.defined.update(re.findall(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?([A-Za-z_]\w*)\s*(?:[,({]|:(?!:))", text, re.M))
            for attribute in re.finditer(r"#\[arg\(([^\]]*)\)\]", text):
                explicit = re.search(r'long\s*=\s*"([^"]+)"', attribute.group(1))
                if explicit:
                    self.options.add("--" + explicit.group(1))
                elif re.search(r"\blong\b", attribute.group(1)):
                    field = re.search(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?([a-z_][a-z0-9_]*)\s*:",
                                      text[attribute.end():], re.M)
                    if field:
                        self.options.add("--" + field.group(1).replace("_", "-"))
            for exercise in re.findall(r"//\s*EXERCISE:\s*([a-z0-9-]+)", text):
                self.exercises.add(exercise)
        if rel.endswith("Cargo.toml"):
            self.defined.update(name.replace("-", "_") for name in re.findall(r'^name\s*=\s*"([^"]+)"', text, re.M))
        if rel.startswith("scripts/"):
            found = set(re.findall(r'add_argument\(\s*(?:"-\w"\s*,\s*)?"(--[a-z0-9-]+)"', text))
            found |= set(re.findall(r'add_argument\(\s*"-\w"\s*,\s*"(--[a-z0-9-]+)"', text))
            self.options |= found
            if "argparse" in text:
                self.script_options[rel] = found | {"--help"}

    def has_path(self, path):
        """A file or directory of the tree, from the root or as the tail of a longer path."""
        path = path.rstrip("/")
        if path in self.files or path in self.dirs:
            return True
        tail = "/" + path
        return any(name.endswith(tail) for name in self.files) or any(name.endswith(tail) for name in self.dirs)

    def spells(self, word):
        return word in self.words or word in EXTERNAL


# --- names ---------------------------------------------------------------------------------

PATHLIKE = re.compile(r"^[\w.-]+(/[\w.*-]*)+$|^[\w-]+\.(rs|py|toml|md|svg|txt|conf|json|lock|png)$")
RUST_PATH = re.compile(r"\b([A-Za-z_]\w*(?:::[A-Za-z_]\w*)+)")
CAMEL = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+$|^[A-Z][a-z]+$")
SNAKE = re.compile(r"^_?[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")
KEBAB = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)+$")
OPTION = re.compile(r"^(--[a-z][a-z0-9-]*)(?:[ =].*)?$")
COMMAND = re.compile(r"^(?:python3\s+)?(scripts/[\w.-]+)((?:\s+\S+)*)$")


def check_path(tree, span):
    if span.startswith(("/", "~", "http", "target/", "..", "<")) or "*" in span or "NN" in span:
        return None  # absolute paths, build output, globs, placeholders: not the tree's
    if span.startswith(("text/", "application/", "image/", "HTTP/")):
        return None  # a media type, a protocol version
    if tree.has_path(span):
        return None
    return f"no file or directory `{span}` in the tree"


def check_rust_path(tree, path):
    first, *rest = path.split("::")
    ours = first in tree.defined or first.replace("-", "_") in tree.defined
    if not ours:
        if first in EXTERNAL or first in tree.words:
            return None  # std, a crate, or a name the code spells (a module, a method's type)
        return f"`{path}`: `{first}` is neither defined in the tree nor listed as external"
    for segment in rest:
        if segment not in tree.defined and segment not in tree.words:
            return f"`{path}`: `{segment}` is not defined in the tree"
    return None


def check_command(tree, span):
    """`scripts/NAME args`: the script exists, and each option it is given is one of its own
    (or, where the script passes them on, one of the step's or of accesses.py's)."""
    match = COMMAND.match(span)
    script = match.group(1)
    if script not in tree.files:
        return f"no script {script}"
    words, after = match.group(2).split(), []
    if "--" in words:
        words, after = words[:words.index("--")], words[words.index("--") + 1:]
    checks = []
    if script == "scripts/experiment.py":
        # experiment.py [--hold S] [--wait S] STEP [step options] -- [accesses.py options]
        checks.append((words, tree.options, "no step has an option"))
        checks.append((after, tree.script_options.get("scripts/accesses.py"), "accesses.py has no option"))
    else:
        # What follows `--` goes to the step.
        checks.append((words, tree.script_options.get(script), f"{script} has no option"))
        checks.append((after, tree.options, "no step has an option"))
    for given, known, message in checks:
        if known is None:
            continue
        for word in given:
            option = word.split("=")[0]
            own = tree.script_options.get(script, set()) if script == "scripts/experiment.py" else set()
            if option.startswith("--") and option not in known and option not in own:
                return f"{message} {option}"
    return None


def check_span(tree, span, before):
    """A problem with one inline code span, or None."""
    span = span.strip()
    if not span or "\n" in span:
        return None
    if COMMAND.match(span) and not tree.has_path(span):
        problem = check_command(tree, span)
        return f"`{span}`: {problem}" if problem else None
    option = OPTION.match(span)
    if option:
        name = option.group(1)
        if name in tree.options or name in EXTERNAL_OPTIONS:
            return None
        return f"no program of ours has an option {name}"
    if " " not in span and PATHLIKE.match(span) and "::" not in span:
        return check_path(tree, span)
    problems = []
    for path in RUST_PATH.findall(span):
        problem = check_rust_path(tree, path)
        if problem:
            problems.append(problem)
    word = re.sub(r"\(\)$|!$", "", span)
    if re.search(r"\btests?\b\s*$|the test\b", before) and SNAKE.match(word):
        if word not in tree.functions:
            problems.append(f"no test or function `{word}` in the tree")
    elif SNAKE.match(word) or KEBAB.match(word) or CAMEL.match(word):
        if not tree.spells(word):
            problems.append(f"`{word}` is defined nowhere in the tree and is not listed as external")
    return "; ".join(problems) or None


PROPOSED = re.compile(r"<!-- proposed: ([^>]*?) -->")


def check_names(tree, pages):
    problems = []
    for path, text in pages:
        # Names a page asks the reader to create (an exercise's new option or setting) exist
        # nowhere yet: the page lists them, so that they are not taken for drift.
        proposed = {name for names in PROPOSED.findall(text) for name in names.split()}
        test_table = False
        for line_number, line in enumerate(text.split("\n"), 1):
            if line.startswith("| file | test"):
                test_table = True
            elif not line.startswith("|"):
                test_table = False
            if test_table and line.startswith("|"):
                cells = line.split("|")
                if len(cells) > 3:
                    for name in re.findall(r"`([a-z0-9_]+)`", cells[2]):
                        if SNAKE.match(name) and name not in tree.functions:
                            problems.append(f"{path}:{line_number}: the test table names `{name}`, "
                                            "which is no function of the tree")
        for line_number, span, before in inline_spans(text):
            if span in proposed or span.split()[0] in proposed:
                continue
            problem = check_span(tree, span, before)
            if problem:
                problems.append(f"{path}:{line_number}: {problem}")
            named = span.split()[1] if span.startswith("--only ") and len(span.split()) == 2 else span
            after_word = re.search(r"\bexercises?\s*(?:`[a-z0-9-]+`\s*(?:,|and|or)\s*)*$", before)
            if (after_word or named != span) and KEBAB.match(named) and named not in tree.exercises:
                problems.append(f"{path}:{line_number}: no exercise `{named}` (the markers name: "
                                f"{', '.join(sorted(tree.exercises))})")
    return problems


# --- figures -------------------------------------------------------------------------------

SEP = r"[,\u202f\u00a0 ]"
FIGURE = re.compile(
    r"(?<![\w.,/])(?:"
    r"(?P<ratio>\d+(?:\.\d+)?)×"
    r"|(?P<grouped>\d{1,3}(?:" + SEP + r"\d{3})+(?:\.\d+)?)(?:\s?(?P<gunit>req/s|requests/s|ms|µs|ns|B|KiB|MiB))?"
    r"|(?P<plain>\d+(?:\.\d+)?)\s?(?P<unit>req/s|requests/s|µs|ns|ms|KiB|MiB|GiB)"
    r"|(?P<seconds>\d+\.\d\d+)\s?s"
    r")(?![\w/])"
)
# Units, by family and size. A value in a data file is compared in the printed unit only when
# its own unit is known (from its JSON key, `p99_ms`, or the unit printed after it, `74.0 KiB`)
# and of the same family: a time in seconds quoted in ms, a size in bytes quoted in KiB.
# A value of unknown unit is compared as it is. Nothing looser: scaling every value into every
# unit would let a wrong figure through by chance.
UNITS = {
    "s": ("time", 1.0), "ms": ("time", 1e-3), "µs": ("time", 1e-6), "us": ("time", 1e-6),
    "ns": ("time", 1e-9),
    "B": ("size", 1.0), "KiB": ("size", 1024.0), "MiB": ("size", 1024.0 ** 2), "GiB": ("size", 1024.0 ** 3),
    "req/s": ("rate", 1.0), "requests/s": ("rate", 1.0), "×": ("ratio", 1.0),
}
# The unit of a JSON value, from its key's ending (or its parent's: `medians_ns`).
KEY_UNITS = [("requests_per_s", "req/s"), ("_rps", "req/s"), ("_ms", "ms"), ("_ns", "ns"),
             ("_us", "µs"), ("_mib", "MiB"), ("_kib", "KiB"), ("bytes", "B"), ("_s", "s"),
             ("ratio", "×"), ("_of_direct", "×")]
TEXT_UNITS = re.compile(r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
                        r"(?:\s?(ms|µs|us|ns|MiB|KiB|GiB|B|s|requests/s|req/s)\b)?")


def figures(text):
    """(line, the figure as printed, its unit, its digits as a number, decimals printed) for
    every figure of the prose, outside code and outside regions marked unrecorded."""
    prose = blank(blank(text, FENCE), UNRECORDED)
    prose = blank(prose, re.compile(r"<!--.*?-->", re.S))
    prose = SPAN.sub(lambda match: " " * len(match.group(0)), prose)
    prose = re.sub(r"\]\([^)]*\)", lambda match: " " * len(match.group(0)), prose)  # link targets
    for match in FIGURE.finditer(prose):
        printed = match.group(0)
        digits = next(match.group(name) for name in ("ratio", "grouped", "plain", "seconds") if match.group(name))
        unit = ("×" if match.group("ratio") else "s" if match.group("seconds")
                else match.group("gunit") or match.group("unit") or "")
        number = re.sub(SEP, "", digits)
        decimals = len(number.split(".")[1]) if "." in number else 0
        line = prose.count("\n", 0, match.start()) + 1
        yield line, printed.strip(), unit, float(number), decimals
    for match in RANGE.finditer(prose):
        number, unit = match.group(1), match.group(2)
        if unit == "s" and len(number.partition(".")[2]) < 2:
            continue  # seconds are checked with two decimals, as the other figures
        decimals = len(number.split(".")[1]) if "." in number else 0
        line = prose.count("\n", 0, match.start()) + 1
        yield line, f"{number} {unit}", unit, float(number), decimals


UNRECORDED = re.compile(r"<!-- unrecorded: begin[^>]*-->.*?<!-- unrecorded: end -->", re.S)
# The first figure of a range or a pair takes the unit printed after the second: `1.52 to 1.70 s`,
# `501.0 / 508.7 ms`.
RANGE = re.compile(r"(?<![\w.,/])(\d+(?:\.\d+)?)(?=\s+(?:to|or|and|/)\s+\d[\d.,]*\s?"
                   r"(ms|µs|ns|KiB|MiB|GiB|req/s|requests/s|s)\b)")


def unit_of_key(key, inherited):
    key = str(key).lower()
    return next((unit for ending, unit in KEY_UNITS if key.endswith(ending)), inherited)


def numbers_in(value, found, unit=None):
    """Every number in a JSON value, recursively, as (number, unit or None)."""
    if isinstance(value, bool):
        return found
    if isinstance(value, (int, float)):
        found.add((float(value), unit))
    elif isinstance(value, dict):
        for key, item in value.items():
            numbers_in(item, found, unit_of_key(key, unit))
    elif isinstance(value, list):
        for item in value:
            numbers_in(item, found, unit)
    elif isinstance(value, str):
        # what a program printed: `14,213 B`, `wall time   1.02 s`, `p99 1041.2`
        for digits, printed_unit in TEXT_UNITS.findall(value):
            found.add((float(digits.replace(",", "")), printed_unit or None))
    return found


def held(number, unit, decimals, values):
    """Whether some value, in the printed unit, rounds at the printed precision to `number`."""
    family, size = UNITS.get(unit, (None, 1.0))
    for value, its_unit in values:
        candidates = [value]
        if family and its_unit in UNITS:
            # in the printed unit, when it is the same kind of quantity; a time is not a size
            same = UNITS[its_unit][0] == family
            candidates = [value * UNITS[its_unit][1] / size] if same else []
        for candidate in candidates:
            if abs(round(candidate, decimals) - number) < 1e-9:
                return True
    return False


def code_settings(tree_root):
    """The settings the code fixes, with their units: `Duration::from_millis(100)` is 100 ms,
    `64 * 1024` is 64 KiB, an option's `default_value_t = 10_000` is 10000. A figure in the
    prose that is one of these is a setting, not a measurement, and the code holds it. Tests
    are left out: their constants are not the program's."""
    settings = {unit: set() for unit in list(UNITS) + [""]}
    for directory, subdirectories, files in os.walk(tree_root):
        subdirectories[:] = [name for name in subdirectories
                             if name not in SKIP_DIRS and name not in ("tests", "testkit", "benches")]
        for name in files:
            if os.path.basename(directory) == "scripts" and name.endswith(".py"):
                # a script's intervals and timeouts, in seconds (`interval=0.25`)
                for digits in re.findall(r"\w*(?:interval|timeout)\w*\s*=\s*(\d+(?:\.\d+)?)\b",
                                         read(os.path.join(directory, name))):
                    settings["s"].add(float(digits))
                continue
            if not name.endswith(".rs"):
                continue
            text = read(os.path.join(directory, name)).split("#[cfg(test)]")[0]
            for kind, digits in re.findall(r"from_(millis|secs|micros)\(([\d_]+)\)", text):
                value = int(digits.replace("_", ""))
                if kind == "millis":
                    settings["ms"].add(value)
                    settings["s"].add(value / 1000)
                elif kind == "secs":
                    settings["s"].add(value)
                    settings["ms"].add(value * 1000)
                else:
                    settings["µs"].add(value)
            for digits, mebi in re.findall(r"\b(\d+) \* 1024( \* 1024)?\b", text):
                settings["MiB" if mebi else "KiB"].add(int(digits))
            for digits in re.findall(r"\b(\d{1,3}(?:_\d{3})+)\b", text):
                settings[""].add(int(digits.replace("_", "")))
    return settings


def data_files_of(page, root=ROOT):
    """The data of a page: docs/NAME.json beside docs/NAME.md (what its generated regions
    show) and docs/data/NAME.json (the runs of its experiments, kept by scripts/record)."""
    name = os.path.splitext(os.path.basename(page))[0]
    found = []
    for directory in (DATA_DIR, os.path.join(DATA_DIR, "data")):
        path = os.path.join(directory, name + ".json")
        if os.path.exists(os.path.join(root, path)):
            found.append(path)
    return found


def cited_data(path, text, root=ROOT):
    """The data files a page cites: its own, those of the pages it links to, and `data:` comments."""
    cited = set(data_files_of(path, root))
    for target in re.findall(r"\]\(([\w./-]+?\.md)(?:#[\w-]*)?\)", text):
        cited.update(data_files_of(os.path.normpath(os.path.join(os.path.dirname(path), target)), root))
    for target in re.findall(r"\]\(([\w./-]+?\.json)\)", text):
        # a link to a data file: the page cites it
        cited.add(os.path.normpath(os.path.join(os.path.dirname(path), target)))
    for names in re.findall(r"<!-- data: ([^>]*?) -->", text):
        for name in names.split():
            # relative to the page, as a link would be
            cited.add(os.path.normpath(os.path.join(os.path.dirname(path), name)))
    return sorted(cited)


def page_settings(text):
    """The times the page's own commands set (`--delay-ms 50`, `/sleep?ms=300`): a figure that
    repeats one is the experiment's setting, not a result."""
    found = {"ms": set(), "s": set()}
    for value in re.findall(r"(?:-ms[ =]|ms=)(\d+)", text):
        found["ms"].add(int(value))
        found["s"].add(int(value) / 1000)
    return found


def check_figures(pages, verbose=False, root=ROOT):
    problems, cache = [], {}
    settings = code_settings(root)
    for path, text in pages:
        values, missing = set(), []
        for data in cited_data(path, text, root):
            if data not in cache:
                full = os.path.join(root, data)
                if not os.path.exists(full):
                    missing.append(data)
                    continue
                with open(full, encoding="utf-8") as source:
                    # JSON, or the plain text a measuring program wrote (step03's trace)
                    cache[data] = numbers_in(json.load(source) if data.endswith(".json") else source.read(), set())
            values |= cache.get(data, set())
        for data in missing:
            problems.append(f"{path}: cites {data}, which does not exist")
        for line, printed, unit, number, decimals in figures(text):
            if held(number, unit, decimals, values):
                if verbose:
                    print(f"{path}:{line}: {printed}: in the data")
                continue
            if number in settings.get(unit, ()) or number in page_settings(text).get(unit, ()):
                if verbose:
                    print(f"{path}:{line}: {printed}: a setting the code fixes")
                continue
            sources = ", ".join(cited_data(path, text, root)) or "no data file"
            problems.append(f"{path}:{line}: the figure {printed} is in none of the data this page "
                            f"cites ({sources})")
        unrecorded = len(UNRECORDED.findall(text))
        if unrecorded and verbose:
            print(f"{path}: {unrecorded} region(s) marked unrecorded, not checked")
    return problems


# --- commands ------------------------------------------------------------------------------

SHELL_BLOCK = re.compile(r"^```(?:sh|bash|shell)[ \t]*\n(.*?)^```", re.S | re.M)


def shell_commands(text):
    """(line, command) for every command of the page's ```sh blocks, continuation lines joined
    and comments dropped."""
    for block in SHELL_BLOCK.finditer(text):
        first = text.count("\n", 0, block.start(1)) + 1
        pending, start = "", None
        for offset, raw in enumerate(block.group(1).split("\n")):
            line = re.sub(r"\s+#.*$|^#.*$", "", raw).rstrip()
            if start is None:
                start = first + offset
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            command = (pending + line).strip()
            pending = ""
            if command:
                yield start, command
            start = None


def crate_names(tree):
    names = {}
    for path in tree.files:
        if path.endswith("Cargo.toml") and "/" in path:
            text = read(os.path.join(tree.root, path))
            name = re.search(r'^name\s*=\s*"([^"]+)"', text, re.M)
            if name:
                names[name.group(1)] = os.path.dirname(path)
    return names


def check_shell_line(tree, crates, command):
    """Problems with one shell command, read without running it."""
    problems = []
    if re.search(r"\btarget/(release|debug)/", command):
        problems.append("assumes the target directory is target/ (CARGO_TARGET_DIR moves it): "
                        "run it with `cargo run --release -p CRATE --`")
    if re.search(r"kill\s+\$\(jobs\s+-p\)", command):
        problems.append("`kill $(jobs -p)` also names jobs that already ended, and errs: "
                        "kill the server by its job number (`kill %1`)")
    for part in re.split(r"\s*(?:&&|\|\||;|\||&)\s*", command):
        part = part.strip()
        script = re.match(r"^(?:python3\s+)?(scripts/[\w.-]+)(\s.*)?$", part)
        if script:
            if not COMMAND.match(part):
                continue
            problem = check_command(tree, part)
            if problem:
                problems.append(problem)
            continue
        cargo = re.match(r"^cargo\s+(run|build|test|bench)\b(.*)$", part)
        if cargo:
            words = cargo.group(2).split()
            options = words[:words.index("--")] if "--" in words else words
            packages = [options[i + 1] for i, word in enumerate(options[:-1]) if word == "-p"]
            for package in packages:
                if package not in crates:
                    problems.append(f"no crate {package} in the workspace")
            for flag, folder in (("--test", "tests"), ("--example", "examples")):
                if flag in options:
                    name = options[options.index(flag) + 1]
                    homes = [crates[package] for package in packages if package in crates] or list(crates.values())
                    if not any(os.path.exists(os.path.join(tree.root, home, folder, name + ".rs"))
                               or os.path.isdir(os.path.join(tree.root, home, folder, name)) for home in homes):
                        problems.append(f"no {folder[:-1]} {name} in {', '.join(packages) or 'the workspace'}")
            if "--" in words and packages and cargo.group(1) == "run":
                for word in words[words.index("--") + 1:]:
                    option = word.split("=")[0]
                    if option.startswith("--") and option not in tree.options:
                        problems.append(f"no step has an option {option}")
    return problems


def check_commands(tree, pages):
    problems = []
    crates = crate_names(tree)
    for path, text in pages:
        for line, command in shell_commands(text):
            for problem in check_shell_line(tree, crates, command):
                problems.append(f"{path}:{line}: `{command}`: {problem}")
    return problems


# How a chapter's script command runs in quick mode: the same script and options, with the
# costs cut (fewer requests and clients, shorter sleeps and runs). Scripts not listed here
# (the long measurements, those that need nginx or a browser, load against a server started
# by hand) are checked statically only.
QUICK_LIMITS = {"-n": 20, "-c": 20, "--requests": 20, "--concurrency": 20, "--keys": 200,
                "--duration": 1, "--hold": 0, "--wait": 0, "--idle": 0, "--delay-ms": 100, "--runs": 1,
                "--rate": 50, "--timeout": 10}
QUICK_SCRIPTS = {"experiment.py", "plot_trace.py", "memory.py",
                 "fairness.py", "key_movement.py", "chat_clients.py", "compare", "stepdiff"}


def quick(command):
    """The quick form of a chapter's script command, or None when it is not run."""
    command = command.split("|")[0].strip()  # `| less`: the command before the pipe
    if command.endswith("&") or re.search(r"[;&]", command):
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if words[0] == "python3":
        words = words[1:]
    if not words or not words[0].startswith("scripts/") or os.path.basename(words[0]) not in QUICK_SCRIPTS:
        return None
    script = os.path.basename(words[0])
    if script == "compare" and "--out-dir" not in words:
        return None  # the full comparison rewrites docs/comparison.md: a maintainer's command
    out = [sys.executable, os.path.join(ROOT, words[0])]
    for index, word in enumerate(words[1:], 1):
        previous = words[index - 1]
        if previous in QUICK_LIMITS and re.fullmatch(r"[\d.]+", word):
            limit = QUICK_LIMITS[previous]
            value = float(word)
            word = f"{min(value, limit):g}" if "." in word else str(int(min(value, limit)))
        if word.startswith(("/sleep?", "http://")):
            word = re.sub(r"/sleep\?ms=(\d+)", lambda m: f"/sleep?ms={min(int(m.group(1)), 50)}", word)
        out.append(word)
    if script == "compare" and "--quick" not in out:
        out.insert(2, "--quick")
    if script == "fairness.py" and "--duration" not in out:
        out.insert(2, "--duration")
        out.insert(3, "1")
    if script == "key_movement.py" and "--keys" not in out:
        out += ["--keys", "200"]
    if script == "memory.py" and "-n" not in out:
        # Before the server's options, which come after `--`.
        out.insert(out.index("--") if "--" in out else len(out), "-n")
        out.insert(out.index("-n") + 1, "20")
    return out


def git_status():
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True)
    return set(done.stdout.splitlines()) if done.returncode == 0 else None


def run_commands(pages, timeout, verbose):
    """Runs every chapter's script commands in quick mode; problems, and the seconds it took."""
    problems, started = [], time.monotonic()
    before = git_status()
    for path, text in pages:
        for line, command in shell_commands(text):
            argv = quick(command)
            if argv is None:
                continue
            if verbose:
                print(f"{path}:{line}: {' '.join(argv[1:])}", flush=True)
            try:
                done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"{path}:{line}: `{command}`: still running after {timeout} s in quick mode")
                continue
            if done.returncode != 0:
                last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
                problems.append(f"{path}:{line}: `{command}`: exit status {done.returncode} in quick "
                                f"mode: {last[0]}")
    after = git_status()
    if before is not None and after is not None:
        for change in sorted(after - before):
            problems.append(f"the chapters' commands left the checkout changed: {change}")
    return problems, time.monotonic() - started


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", action="store_true", help="check the names")
    parser.add_argument("--figures", action="store_true", help="check the figures")
    parser.add_argument("--commands", action="store_true", help="check the shell commands")
    parser.add_argument("--run", action="store_true", help="with --commands: run them, in quick mode")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per command with --run (default 60)")
    parser.add_argument("--verbose", action="store_true", help="say what is checked or run")
    args = parser.parse_args(argv)
    every = not (args.names or args.figures or args.commands)
    pages = book_pages()
    tree = Tree(ROOT) if (args.names or args.commands or every) else None
    problems, done = [], []
    if args.names or every:
        problems += check_names(tree, pages)
        done.append("names")
    if args.figures or every:
        problems += check_figures(pages, args.verbose)
        done.append("figures")
    if args.commands or every:
        problems += check_commands(tree, pages)
        done.append("commands")
        if args.run:
            ran, seconds = run_commands(pages, args.timeout, args.verbose)
            problems += ran
            done[-1] = f"commands (run in quick mode, {seconds:.0f} s)"
    for problem in problems:
        print(problem)
    print(f"check_book: {', '.join(done)} of {len(pages)} pages: "
          + (f"{len(problems)} problem(s)" if problems else "the book agrees with the tree and the data"),
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
