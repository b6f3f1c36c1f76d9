#!/usr/bin/env python3
"""Validate kvbench results files against docs/results.schema.json (JSON Schema draft 2020-12).

Usage: validate_results.py SCHEMA FILE...
Each FILE is checked against the definition its name calls for: results.json (and any other *.json outside
cells/ and datasets/) against the whole schema, RESULTS_DIR/cells/<i>.json against $defs/cell_file and
RESULTS_DIR/datasets/<i>.json against $defs/dataset_file. Prints one line per file; exit 0 when all are
valid, 1 when one is not, 77 when the jsonschema module is missing.
"""
import json
import os
import sys

try:
    import jsonschema
except ImportError:
    print("validate_results.py: the jsonschema module is missing (Debian: python3-jsonschema)", file=sys.stderr)
    sys.exit(77)


def definition_for(path):
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return {"cells": "cell_file", "datasets": "dataset_file"}.get(parent)


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    validators = {None: jsonschema.Draft202012Validator(schema)}
    for name in ("cell_file", "dataset_file"):
        # A root that only refers to one definition, so "#/$defs/..." references resolve as in the schema.
        sub = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{name}"}
        validators[name] = jsonschema.Draft202012Validator(sub)
    bad = 0
    for path in argv[2:]:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        which = definition_for(path)
        errors = sorted(validators[which].iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            bad += 1
            print(f"INVALID {path} ({which or 'results'}): {len(errors)} error(s)")
            for e in errors[:10]:
                where = "/".join(str(p) for p in e.absolute_path) or "(root)"
                print(f"  at {where}: {e.message[:300]}")
        else:
            print(f"ok  {path} ({which or 'results'})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
