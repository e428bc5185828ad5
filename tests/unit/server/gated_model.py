"""A real recommender whose load and predict can be held: the server tests' way to reach not-ready and full-queue
states without mocks."""

from __future__ import annotations

import threading
from typing import Any, Sequence

from hybridrec_server.predictor import Query, Recommendation, RecommenderModel


class GatedModel(RecommenderModel):
    """Real model whose load and predict can be held, to observe not-ready and full-queue states."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.load_gate = threading.Event()
        self.predict_gate = threading.Event()
        self.predict_gate.set()
        self.in_predict = threading.Event()

    def load(self) -> None:
        self.load_gate.wait(10)
        super().load()

    def predict(self, queries: Sequence[Query]) -> list[Recommendation]:
        if self.ready:
            self.in_predict.set()
            self.predict_gate.wait(10)
        return super().predict(queries)
