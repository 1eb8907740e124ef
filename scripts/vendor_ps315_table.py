"""Write src/pair/deid/data/ps3.15-table-e1-1.csv from innolitics/dicom-standard's JSON.

Usage: python scripts/vendor_ps315_table.py confidentiality_profile_attributes.json

The input is ``standard/confidentiality_profile_attributes.json`` of
https://github.com/innolitics/dicom-standard (a machine-read copy of DICOM PS3.15 Table E.1-1).
Run once by hand when the vendored copy is refreshed; tests never download anything.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from pydicom.datadict import dictionary_is_retired

OUT = (
    Path(__file__).resolve().parents[1] / "src" / "pair" / "deid" / "data" / "ps3.15-table-e1-1.csv"
)

# CSV column -> innolitics JSON key (Table E.1-1 column headings in the comments)
COLUMNS = {
    "name": "name",  # Attribute Name
    "tag": "tag",  # Tag
    "retired": "",  # Retd. (not in the JSON: from pydicom's PS3.6 dictionary)
    "std_comp_iod": "stdCompIOD",  # In Std. Comp. IOD
    "basic_profile": "basicProfile",  # Basic Prof.
    "rtn_safe_priv": "rtnSafePrivOpt",  # Rtn. Safe Priv. Opt.
    "rtn_uids": "rtnUIDsOpt",  # Rtn. UIDs Opt.
    "rtn_dev_id": "rtnDevIdOpt",  # Rtn. Dev. Id. Opt.
    "rtn_inst_id": "rtnInstIdOpt",  # Rtn. Inst. Id. Opt.
    "rtn_pat_chars": "rtnPatCharsOpt",  # Rtn. Pat. Chars. Opt.
    "rtn_long_full_dates": "rtnLongFullDatesOpt",  # Rtn. Long. Full Dates Opt.
    "rtn_long_modif_dates": "rtnLongModifDatesOpt",  # Rtn. Long. Modif. Dates Opt.
    "clean_desc": "cleanDescOpt",  # Clean Desc. Opt.
    "clean_struct_cont": "cleanStructContOpt",  # Clean Struct. Cont. Opt.
    "clean_graph": "cleanGraphOpt",  # Clean Graph. Opt.
}


def retired(tag: str) -> str:
    """Y/N from pydicom's dictionary; repeating groups are looked up at their first group."""
    text = tag.strip("()").replace(",", "").upper()
    if not all(c in "0123456789ABCDEFX" for c in text) or len(text) != 8:
        return "N"  # the private-attributes row
    try:
        return "Y" if dictionary_is_retired(int(text.replace("X", "0"), 16)) else "N"
    except KeyError:  # (50xx,xxxx) Curve Data: the whole retired Curve module's group
        return "Y" if text.startswith("50") else "N"


def main(src: str) -> None:
    rows = json.loads(Path(src).read_text("utf-8"))
    with OUT.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in sorted(rows, key=lambda r: r["tag"]):
            writer.writerow(
                retired(row["tag"]) if key == "" else row.get(key, "") for key in COLUMNS.values()
            )


if __name__ == "__main__":
    main(sys.argv[1])
