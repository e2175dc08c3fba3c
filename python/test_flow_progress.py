"""Tests of flow_progress.py: `python3 -m unittest discover -s python` (tests/observe.rs runs
them; flow's own parser reads the helper's lines back in the same file)."""

import io
import json
import math
import unittest

import flow_progress


class Lines(unittest.TestCase):
    def test_a_report_is_one_versioned_json_line(self):
        self.assertEqual(
            flow_progress.line(3, total=10, loss=2.5, lr=1e-3),
            '@flow/1 {"step":3,"total":10,"loss":2.5,"lr":0.001}',
        )

    def test_non_finite_values_are_strings_and_none_is_left_out(self):
        text = flow_progress.line(1, loss=math.nan, up=math.inf, down=-math.inf, skipped=None)
        self.assertEqual(json.loads(text.split(" ", 1)[1]), {"step": 1, "loss": "nan", "up": "inf", "down": "-inf"})

    def test_names_that_are_not_identifiers_go_through_a_dict(self):
        self.assertIn('"val_loss/wiki":0.5', flow_progress.line(1, **{"val_loss/wiki": 0.5}))

    def test_bad_input_is_refused_before_anything_is_printed(self):
        for call in (
            lambda: flow_progress.line(-1),
            lambda: flow_progress.line(1.5),
            lambda: flow_progress.line(True),
            lambda: flow_progress.line(1, total=-2),
            lambda: flow_progress.line(1, **{"a b": 1}),
        ):
            self.assertRaises(ValueError, call)
        self.assertRaises(TypeError, lambda: flow_progress.line(1, acc="high"))

    def test_report_writes_the_line_and_flushes(self):
        out = io.StringIO()
        flow_progress.report(2, total=4, file=out, loss=1.25)
        self.assertEqual(out.getvalue(), '@flow/1 {"step":2,"total":4,"loss":1.25}\n')


if __name__ == "__main__":
    unittest.main()
