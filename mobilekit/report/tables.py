"""Plain-text and markdown tables (one formatter for every human table)."""


def format_table(headers, rows, markdown=False):
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max([len(str(h))] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def is_number(text):
        return text.replace(",", "").replace(".", "", 1).replace("-", "", 1).replace("x", "", 1).isdigit()

    def line(cells):
        out = []
        for i, c in enumerate(cells):
            out.append(c.rjust(widths[i]) if is_number(c) else c.ljust(widths[i]))
        return ("| " + " | ".join(out) + " |") if markdown else "  ".join(out).rstrip()

    sep = ("|" + "|".join("-" * (w + 2) for w in widths) + "|") if markdown else \
        "  ".join("-" * w for w in widths)
    return "\n".join([line([str(h) for h in headers]), sep] + [line(r) for r in rows])
