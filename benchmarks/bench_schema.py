"""Validating event data against a JSON Schema: ``fastjsonschema`` (code
generated per schema, what the catalog's bound schemas run,
fastflow.catalog.schemas) against ``jsonschema`` (an interpreter over the
schema; its validator built once, ``Draft7Validator(schema).is_valid`` /
``iter_errors``).

Workloads (each validated 10,000 times, the data decoded once beforehand):

* ``small``: an order: an object with 4 typed properties, 2 required;
* ``nested``: the order with 10 line items (objects with a pattern, a
  minimum and an enum), and an address object;
* ``invalid``: the nested one with its last item wrong (the error is
  found and its path reported: what a refused publish costs).

Each figure is the median of ``--repeat`` runs (per validation, in us);
the rows of a workload are interleaved and gc is off while a run is
timed.  ``--json`` writes the figures as one JSON document to stdout (the
report goes to stderr); ``--quick`` is a smoke run.
"""

import argparse
import statistics
import sys
import time

import fastjsonschema
import jsonschema
from _common import (add_output_args, cpu_facts, fastflow_facts, fmt_ratio, machine_format_fields,
                     python_desc, render_table, report_to, say, time_rows, write_json)

N = 10000

ORDER = {
    "type": "object", "required": ["id", "amount"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "amount": {"type": "integer", "minimum": 0},
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
        "express": {"type": "boolean"},
        "items": {"type": "array", "maxItems": 100, "items": {
            "type": "object", "required": ["sku", "qty"],
            "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                           "qty": {"type": "integer", "minimum": 1},
                           "kind": {"type": "string", "enum": ["book", "game", "toy"]}}}},
        "address": {"type": "object", "required": ["city"], "properties": {
            "street": {"type": "string"}, "city": {"type": "string"},
            "zip": {"type": "string", "maxLength": 10}}},
    },
}


def workloads():
    small = {"id": "o-1", "amount": 150, "currency": "EUR", "express": False}
    nested = dict(small, items=[{"sku": "ABC-{:04d}".format(i), "qty": i + 1, "kind": "book"}
                                for i in range(10)],
                  address={"street": "1 Main St", "city": "Lyon", "zip": "69001"})
    invalid = dict(nested, items=nested["items"][:-1] + [{"sku": "abc", "qty": 0}])
    return {"small": small, "nested": nested, "invalid": invalid}


def rows_for(name, data, n):
    fast = fastjsonschema.compile(ORDER)
    slow = jsonschema.Draft7Validator(ORDER)
    valid = name != "invalid"

    def run_fast():
        paths = []
        t0 = _now()
        for _ in range(n):
            try:
                fast(data)
            except fastjsonschema.JsonSchemaValueException as exc:
                paths.append(exc.name)          # (the path a refusal names)
        return (_now() - t0) / n

    def run_slow():
        paths = []
        t0 = _now()
        if valid:
            for _ in range(n):
                slow.is_valid(data)
        else:
            for _ in range(n):
                err = next(slow.iter_errors(data), None)
                if err is not None:
                    paths.append(err.json_path)
        return (_now() - t0) / n

    return [{"key": (name, "fastjsonschema"), "fn": run_fast},
            {"key": (name, "jsonschema"), "fn": run_slow}]


_now = time.perf_counter


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="runs a figure is the median of")
    add_output_args(ap, "a second or two")
    args = ap.parse_args()
    if args.json:
        report_to(sys.stderr)
    repeat = 3 if args.quick else args.repeat
    n = 1000 if args.quick else N
    m = {**cpu_facts(), **fastflow_facts(), "python": python_desc(),
         "fastjsonschema": fastjsonschema.VERSION,
         "jsonschema": _version("jsonschema")}
    f = machine_format_fields(m)
    say("{cpu}{mhz}, {cores} cores ({usable} usable), {py}, fastjsonschema {fj}, "
        "jsonschema {js}".format(cpu=m["cpu"], usable=m["usable_cores"], cores=m["cores"],
                                 py=m["python"], fj=m["fastjsonschema"], js=m["jsonschema"],
                                 **f))
    out = {"machine": m, "validate": {}}
    table = []
    for name, data in workloads().items():
        times, _ = time_rows(rows_for(name, data, n), repeat)
        fast = statistics.median(times[(name, "fastjsonschema")])
        slow = statistics.median(times[(name, "jsonschema")])
        out["validate"][name] = {"fastjsonschema_us": fast * 1e6, "jsonschema_us": slow * 1e6,
                                 "ratio": slow / fast}
        table.append([name, "{:.2f} us".format(fast * 1e6), "{:.2f} us".format(slow * 1e6),
                      fmt_ratio(slow / fast)])
    say("\nvalidation, per event (median of {} runs of {:,})".format(repeat, n))
    say(render_table(["data", "fastjsonschema", "jsonschema", "vs."], table, "<>>>"))
    if args.json:
        write_json(out)


def _version(dist):
    from importlib.metadata import version
    return version(dist)


if __name__ == "__main__":
    main()
