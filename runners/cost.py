"""What a batch of n rows is expected to cost, learned from the batches that ran."""

from __future__ import annotations


class BatchCost:
    """Seconds ~ fixed + per_row * n, a least-squares fit over exponentially decayed history.

    O(1) per observation, so it can be updated after every batch; recent batches dominate,
    so the estimate follows load, device contention and warm caches.

    Two guards keep one stalled batch (the process descheduled, a page fault) from ruling the
    estimate: an observation counts as at most `outlier_factor` times the estimate plus
    `outlier_floor` seconds, and the slope is at most the mean cost per row, i.e. a batch is
    never expected to cost more than its rows run one by one. Without the second guard, a
    stream of one-row batches with one slow two-row batch among them yields a steep slope,
    and batches of a size never seen are then refused as over budget and never observed.
    """

    def __init__(self, decay: float = 0.97, outlier_factor: float = 4.0, outlier_floor: float = 0.001) -> None:
        self._decay = decay
        self._outlier_factor = outlier_factor
        self._outlier_floor = outlier_floor
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self.fixed = 0.0
        self.per_row = 0.0

    @property
    def learned(self) -> bool:
        """Whether any batch has been observed; before that the estimate is a meaningless 0."""
        return self._w > 0

    def observe(self, rows: int, seconds: float) -> None:
        if self.learned:
            seconds = min(seconds, self._outlier_factor * self.estimate(rows) + self._outlier_floor)
        d = self._decay
        self._w = d * self._w + 1.0
        self._x = d * self._x + rows
        self._y = d * self._y + seconds
        self._xx = d * self._xx + rows * rows
        self._xy = d * self._xy + rows * seconds
        mean_x, mean_y = self._x / self._w, self._y / self._w
        var_x = self._xx / self._w - mean_x * mean_x
        per_row_mean = mean_y / max(mean_x, 1.0)
        if var_x > 1e-9:
            slope = (self._xy / self._w - mean_x * mean_y) / var_x
            self.per_row = min(max(0.0, slope), per_row_mean)
            self.fixed = max(0.0, mean_y - self.per_row * mean_x)
        else:  # every batch had the same size: no slope to learn yet
            self.per_row = per_row_mean
            self.fixed = 0.0

    def expected(self, rows: int) -> float | None:
        """The estimate for `rows`, or None while nothing has been observed."""
        return self.estimate(rows) if self.learned else None

    def estimate(self, rows: int) -> float:
        return self.fixed + self.per_row * rows
