"""The line and CSV readers every script shares: lines split on \\n only, a byte-order mark dropped, UTF-8
checked, CSV records on one line each, and any read error turned into one DataError naming the file."""
import csv
import gzip

from tig.errors import UserError


class DataError(UserError):
    pass


def open_text(path):
    opener = gzip.open if path.endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8-sig", newline="")


def utf8_lines(f, path, at=None):
    """Lines of a binary file, split on b"\\n" only (a lone \\r, U+2028 or a form feed stays inside its
    line, where clean_text makes it a space), decoded as UTF-8, with a byte-order mark dropped from the
    start of the file. at: [byte offset] to start from; it moves to the end of each line handed out."""
    at = at if at is not None else [0]
    f.seek(at[0])
    for raw in f:
        first = at[0] == 0
        at[0] += len(raw)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text near byte {at[0] - len(raw) + e.start}; convert it, e.g. "
                            "iconv -f GBK -t UTF-8") from None
        yield line[1:] if first and line.startswith("\ufeff") else line


def csv_records(lines, where):
    """(line number within `lines`, row) per CSV record. A record must sit on one line: none of the
    real files has a line break inside a field, so a record that spans lines is an unclosed quote that
    would silently fold the rows after it into one text. where(line) names the place in errors."""
    reader = csv.reader(lines)
    previous = reader.line_num
    try:
        for row in reader:
            first, previous = previous + 1, reader.line_num
            if reader.line_num > first:
                raise DataError(f"{where(first)}: a quoted field runs across lines {first}-{reader.line_num} "
                                "(an unclosed quote?)")
            yield first, row
    except csv.Error as e:
        raise DataError(f"{where(previous + 1)}: {e}") from None


class reading:
    """Context manager: any error while reading `path` becomes one DataError naming the file."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if isinstance(error, UnicodeDecodeError):
            raise DataError(f"{self.path}: not UTF-8 text (byte {error.start}); convert it, e.g. "
                            f"iconv -f GBK -t UTF-8") from None
        if isinstance(error, (csv.Error, OSError, EOFError)):
            raise DataError(f"{self.path}: cannot read ({error.__class__.__name__}: {error})") from None
        return False
