"""Schedules: any scalar hyper-parameter may change linearly over a stage's steps.

In YAML a scalar is either a number or ``[start_step, start_value, end_value, end_step]``
(threestudio's convention): the value is ``start_value`` up to ``start_step``, moves linearly to
``end_value`` at ``end_step`` and stays there. A step change is a schedule whose end step is the
step after its start: ``[9999, 0.98, 0.7, 10000]`` is 0.98 up to step 9999 and 0.7 from step 10000
(no step lies strictly between, so nothing is interpolated).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    start_step: int
    start_value: float
    end_value: float
    end_step: int

    def __post_init__(self) -> None:
        if self.end_step < self.start_step:
            raise ValueError(
                f"schedule end_step ({self.end_step}) is before start_step ({self.start_step})"
            )

    def at(self, step: int) -> float:
        if step <= self.start_step or self.end_step == self.start_step:
            return self.start_value if step <= self.start_step else self.end_value
        if step >= self.end_step:
            return self.end_value
        frac = (step - self.start_step) / (self.end_step - self.start_step)
        return self.start_value + frac * (self.end_value - self.start_value)


Scalar = float | Schedule
"""Type of a hyper-parameter that may be a number or a :class:`Schedule`."""


def value_at(x: Scalar | int, step: int) -> float:
    """The value of a scalar or schedule at ``step`` (the one helper that evaluates schedules)."""
    if isinstance(x, Schedule):
        return x.at(step)
    return float(x)
