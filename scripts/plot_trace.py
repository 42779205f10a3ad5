#!/usr/bin/env python3
"""Draw step03's scaling trace as an SVG: workers over time, and the queue at each event.

The trace is what step03-queue-autoscale writes with --trace FILE (or on stdout): one line
`t_ms workers queue_len` per scaling event, the first line being the start. Other lines (an
access log mixed in on stdout) are skipped. The plot needs nothing but the standard library.

Workers are drawn as a step line, since the count only changes at events. The queue's length
is known only at those events, so it is drawn as dots, not as a line that would invent the
values in between.

Examples:
  python3 scripts/plot_trace.py /tmp/trace.txt images/03-occupancy.svg
  python3 scripts/plot_trace.py /tmp/trace.txt out.svg --capacity 10 --title "one burst"
"""

import argparse
import math
import sys
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 420
LEFT, RIGHT, TOP = 64, 24, 40
PANEL_GAP = 44
WORKERS_HEIGHT, QUEUE_HEIGHT = 200, 90


def read_trace(lines):
    """The (t_s, workers, queue_len) events among `lines`, in order."""
    events = []
    for line in lines:
        fields = line.split()
        if len(fields) != 3 or not all(field.isdigit() for field in fields):
            continue
        t_ms, workers, queue_len = (int(field) for field in fields)
        events.append((t_ms / 1000, workers, queue_len))
    return events


def nice_step(span, ticks=6):
    """A round tick step (1, 2 or 5 times a power of ten) giving about `ticks` ticks."""
    if span <= 0:
        return 1
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def axis_max(value, step):
    return max(step, math.ceil(value / step) * step)


def number(value):
    """A tick label: no trailing `.0`."""
    return f"{value:g}"


class Panel:
    """One plot area: maps data to pixels and draws its axes."""

    def __init__(self, top, height, x_max, y_max, y_step, label):
        self.top, self.height = top, height
        self.x_max, self.y_max, self.y_step = x_max, y_max, y_step
        self.label = label
        self.width = WIDTH - LEFT - RIGHT

    def x(self, t):
        return LEFT + self.width * t / self.x_max

    def y(self, value):
        return self.top + self.height * (1 - value / self.y_max)

    def axes(self, x_step, x_labels):
        out = [
            f'<rect x="{LEFT}" y="{self.top}" width="{self.width}" height="{self.height}" '
            'fill="#fbfbf4" stroke="#333"/>'
        ]
        value = 0
        while value <= self.y_max + 1e-9:
            y = self.y(value)
            out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + self.width}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{number(value)}</text>')
            value += self.y_step
        t = 0
        while t <= self.x_max + 1e-9:
            x = self.x(t)
            out.append(f'<line x1="{x:.1f}" y1="{self.top + self.height}" x2="{x:.1f}" y2="{self.top + self.height + 4}" stroke="#333"/>')
            if x_labels:
                out.append(f'<text x="{x:.1f}" y="{self.top + self.height + 18}" text-anchor="middle">{number(t)}</text>')
            t += x_step
        middle = self.top + self.height / 2
        out.append(
            f'<text x="16" y="{middle:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 16 {middle:.1f})">{escape(self.label)}</text>'
        )
        return out


def render(events, capacity=None, title=None):
    """The SVG document for `events` (at least one)."""
    end = max(t for t, _, _ in events)
    x_step = nice_step(end)
    x_max = axis_max(end * 1.02, x_step)
    peak = max(workers for _, workers, _ in events)
    w_step = nice_step(peak, 5)
    capacity = capacity or max(max(length for _, _, length in events), 1)
    q_step = nice_step(capacity, 4)

    workers_panel = Panel(TOP, WORKERS_HEIGHT, x_max, axis_max(peak, w_step), w_step, "workers")
    queue_top = TOP + WORKERS_HEIGHT + PANEL_GAP
    queue_panel = Panel(queue_top, QUEUE_HEIGHT, x_max, axis_max(capacity, q_step), q_step, "queued")

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(title or 'step03 scaling trace')}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
    ]
    if title:
        out.append(f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>')
    out += workers_panel.axes(x_step, x_labels=False)
    out += queue_panel.axes(x_step, x_labels=True)

    # Workers: a step line, flat between events.
    points = []
    previous = None
    for t, workers, _ in events:
        if previous is not None:
            points.append((t, previous))
        points.append((t, workers))
        previous = workers
    points.append((x_max, previous))
    path = " ".join(f"{workers_panel.x(t):.1f},{workers_panel.y(w):.1f}" for t, w in points)
    out.append(f'<polyline points="{path}" fill="none" stroke="#1f5fa8" stroke-width="2"/>')

    # The queue: dots at the events, the only moments it was measured.
    for t, _, length in events:
        out.append(
            f'<circle cx="{queue_panel.x(t):.1f}" cy="{queue_panel.y(length):.1f}" r="2.5" fill="#c0582b"/>'
        )
    if capacity:
        y = queue_panel.y(capacity)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + queue_panel.width}" y2="{y:.1f}" '
            'stroke="#c0582b" stroke-dasharray="4,3"/>'
        )
        out.append(f'<text x="{WIDTH - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#c0582b">capacity</text>')

    out.append(
        f'<text x="{LEFT + workers_panel.width}" y="{TOP - 6}" text-anchor="end">'
        f"peak {peak} workers, {len(events) - 1} scaling events</text>"
    )
    bottom = queue_top + QUEUE_HEIGHT + 36
    out.append(f'<text x="{LEFT + queue_panel.width / 2}" y="{bottom}" text-anchor="middle">seconds since the server started</text>')
    out.append(
        f'<text x="{LEFT}" y="{queue_top - 8}" fill="#c0582b">'
        "connections queued, at each scaling event</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="plot_trace.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("trace", help="the trace file (t_ms workers queue_len per line)")
    parser.add_argument("svg", help="where to write the plot")
    parser.add_argument("--capacity", type=int, help="the queue's capacity (default: the longest queue seen)")
    parser.add_argument("--title", help="a title above the plot")
    args = parser.parse_args(argv)
    try:
        with open(args.trace) as source:
            events = read_trace(source)
    except OSError as error:
        parser.exit(1, f"plot_trace.py: cannot read {args.trace}: {error.strerror}\n")
    if not events:
        parser.exit(1, f"plot_trace.py: no `t_ms workers queue_len` lines in {args.trace}\n")
    svg = render(events, capacity=args.capacity, title=args.title)
    try:
        with open(args.svg, "w") as target:
            target.write(svg)
    except OSError as error:
        parser.exit(1, f"plot_trace.py: cannot write {args.svg}: {error.strerror}\n")
    peak = max(workers for _, workers, _ in events)
    print(f"{args.svg}: {len(events)} events, peak {peak} workers, last at {events[-1][0]:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
