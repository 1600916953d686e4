"""One patient's label for each of the study's tasks, read from its clinical row by the schema's rule (``Task``).

survival: the time column (a number >= 0 in the task's unit) and the event column (1 = the event observed, 0 =
censored; also true/false, yes/no); classification: the label is one of the task's classes (case-insensitive);
binary: one of its positive or negative values. A blank label is unknown (the patient is left out of that task).
``check_time_unit`` flags a time column whose values cannot be in the declared unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedfusion.data.patient_records import ClassLabel, Label, SurvivalLabel
from fedfusion.data.tables.covariates import is_missing
from fedfusion.study.schema import Task

EVENT_CODES = {"1": 1, "0": 0, "1.0": 1, "0.0": 0, "true": 1, "false": 0, "yes": 1, "no": 0}
MAX_PLAUSIBLE_MEDIAN = {"days": None, "months": 600.0, "years": 50.0}
"""A median follow-up above this (in the unit) means the column is in a finer unit than declared (50 years)."""
MIN_PLAUSIBLE_MEDIAN = {"days": 3.0, "months": None, "years": None}
"""A median follow-up below this (in days) means the column is in a coarser unit than declared."""


class LabelValueError(ValueError):
    """A label cell that the task's rule cannot read; the message names the column and the value."""


def parse_label(task: Task, row: Mapping[str, str]) -> Label:
    """The task's label from one clinical row; unknown labels are NaN time / index -1."""
    if task.is_survival:
        time_text, event_text = row.get(task.time, ""), row.get(task.event, "")
        if is_missing(time_text) and is_missing(event_text):
            return SurvivalLabel(math.nan, 0)
        try:
            time = float(time_text)
        except ValueError:
            raise LabelValueError(f"{task.time} must be a number of {task.unit} >= 0, got {time_text!r}") from None
        if not (math.isfinite(time) and time >= 0):
            raise LabelValueError(f"{task.time} must be a number of {task.unit} >= 0, got {time_text!r}")
        event = EVENT_CODES.get(event_text.strip().lower())
        if event is None:
            raise LabelValueError(f"{task.event} must be 1 ({task.event_meaning} observed) or 0 (censored), "
                                  f"got {event_text!r}")
        return SurvivalLabel(time, event)
    text = row.get(task.label, "")
    if is_missing(text):
        return ClassLabel(-1)
    key = text.strip().lower()
    if task.type == "binary":
        if key in {v.lower() for v in task.positive}:
            return ClassLabel(1)
        if key in {v.lower() for v in task.negative}:
            return ClassLabel(0)
        raise LabelValueError(f"{task.label} must be one of {list(task.positive + task.negative)}, got {text!r}")
    classes = [c.lower() for c in task.classes]
    if key not in classes:
        raise LabelValueError(f"{task.label} {text!r} is not one of the task's classes {list(task.classes)}")
    return ClassLabel(classes.index(key))


def check_time_unit(task: Task, labels: Sequence[SurvivalLabel]) -> str | None:
    """A message when the known times cannot be in ``task.unit`` (median implausible), else None."""
    times = [label.time for label in labels if label.known]
    if len(times) < 5:
        return None
    median = float(np.median(times))
    high, low = MAX_PLAUSIBLE_MEDIAN[task.unit], MIN_PLAUSIBLE_MEDIAN[task.unit]
    if high is not None and median > high:
        return (f"column {task.time}: median time {median:g} is implausible in {task.unit} (over 50 years): is the "
                f"column in a finer unit? Declare its unit in the schema's task '{task.name}'")
    if low is not None and median < low:
        return (f"column {task.time}: median time {median:g} is implausible in {task.unit}: is the column in a "
                f"coarser unit? Declare its unit in the schema's task '{task.name}'")
    return None
