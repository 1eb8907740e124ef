"""Text values read from and written as pydicom ``RawDataElement`` objects, without building a
``DataElement``: the de-identification pass reads and writes a few dozen short ASCII strings per
instance, and pydicom's generic conversion (hooks, validation, value objects) costs more than
the rest of the pass.

Both directions are exact or decline: ``text_values`` gives the strings pydicom's own conversion
would give, and ``raw_text`` gives the element pydicom would write for that value, or ``None``
whenever that cannot be guaranteed (non-ASCII text, ISO 2022 escapes, odd padding, backslashes,
date/time conversion switched on), and the caller then takes pydicom's path.
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom import config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

# VRs whose raw value converts with plain ``multi_string`` (no character set, no stripping
# beyond trailing spaces and NULs): AS/CS always; DA/DT/TM while datetime conversion is off.
_MULTI_STRING = frozenset({"AS", "CS", "DA", "DT", "TM"})
_TEXT_MULTI = frozenset({"LO", "SH", "UC"})  # convert_text: split, rstrip each
_TEXT_SINGLE = frozenset({"LT", "ST", "UT"})  # convert_single_string: one value, rstrip
# VRs ``raw_text`` may write: plain strings whose value round-trips through pydicom unchanged.
WRITABLE_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "LO", "SH", "UC", "PN", "UI"})
_ESC = 0x1B


def text_values(raw: RawDataElement, vr: str, *, pn: bool = False) -> list[str] | None:
    """The string values pydicom would convert ``raw`` to (one item for a single value, ``['']``
    for an empty element), or ``None`` when only pydicom's conversion can tell.

    ``vr`` is the VR pydicom would use (the caller resolved implicit and UN VRs). PN is only
    handled with ``pn=True``: the strings are the raw name strings, equal to ``str()`` of the
    ``PersonName`` values for ASCII names (used by the scanner, which splits them itself).
    """
    value = raw.value
    if raw.length == 0:
        return [""]
    if not isinstance(value, bytes) or not value.isascii() or _ESC in value:
        return None
    if vr in _MULTI_STRING:
        if vr in ("DA", "DT", "TM") and config.datetime_conversion:
            return None
        return value.decode("ascii").rstrip(" \x00").split("\\")
    if vr in _TEXT_MULTI:
        return [v.rstrip("\x00 ") for v in value.decode("ascii").split("\\")]
    if vr in _TEXT_SINGLE:
        return [value.decode("ascii").rstrip("\x00 ")]
    if vr == "UI":
        return value.decode("ascii").rstrip("\x00 ").rstrip(" \x00").split("\\")
    if vr == "AE":
        return [v.strip() for v in value.decode("ascii").split("\\")]
    if vr == "PN" and pn:
        return value.rstrip(b"\x00 ").decode("ascii").split("\\")
    return None


def raw_text(
    tag: BaseTag, vr: str, value: str | list[str], encoding: tuple[bool, bool] | None
) -> RawDataElement | None:
    """A raw element that pydicom converts back to exactly ``value`` and writes with exactly the
    bytes a ``DataElement(tag, vr, value)`` would get, in a dataset whose original encoding
    (implicit VR, little endian) is ``encoding``; ``None`` when that is not certain."""
    if encoding is None or vr not in WRITABLE_VRS:
        return None
    if vr in ("DA", "DT", "TM") and config.datetime_conversion:
        return None
    if isinstance(value, str):
        if value == "":
            return RawDataElement(tag, vr, 0, b"", 0, encoding[0], encoding[1], True, False)
        values = [value]
    else:
        values = value
        if len(values) < 2:
            return None
    for v in values:
        # empty items, padding and separators would not survive the round trip unchanged
        if not isinstance(v, str) or not v or v != v.strip(" \x00") or "\\" in v:
            return None
    text = "\\".join(values)
    if not text.isascii() or "\x1b" in text:
        return None
    if vr == "PN" and ("=" in text or text.endswith("^")):
        return None  # component groups: let PersonName decide
    data = text.encode("ascii")
    if len(data) & 1:
        data += b"\x00" if vr == "UI" else b" "
    return RawDataElement(tag, vr, len(data), data, 0, encoding[0], encoding[1], True, False)


def resolved_vr(raw: RawDataElement, tag: int, dict_vr: Callable[[int], str]) -> str | None:
    """The VR pydicom's conversion would give ``raw``, when that is certain without it: the
    explicit VR, or the dictionary VR of a public tag read implicitly (``None`` for UN and for
    private tags, whose VR pydicom looks up by creator)."""
    vr = raw.VR
    if vr is None:
        if (tag >> 16) & 1 or not tag & 0xFFFF:
            return None
        vr = dict_vr(tag)
        return None if vr == "UN" else vr
    return None if vr == "UN" else str(vr)


def single_text(ds: Dataset, tag: int, dict_vr: Callable[[int], str]) -> str | None:
    """``str(ds.<keyword>)`` of a raw single-valued text element without converting it ("" when
    absent); ``None`` when only pydicom can tell (the caller asks the dataset then)."""
    raw = ds._dict.get(tag)  # type: ignore[call-overload]
    if raw is None:
        return ""
    if type(raw) is not RawDataElement:
        return None
    vr = resolved_vr(raw, tag, dict_vr)
    if vr is None:
        return None
    values = text_values(raw, vr)
    if values is None or len(values) != 1:
        return None
    return values[0]
