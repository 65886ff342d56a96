"""The query path: embed the query, k-NN in the index, map ids to identities, decide, calibrate."""

from search.identify import Candidate, FaceAnswer
from search.searcher import NoIndexError, Searcher

__all__ = ["Candidate", "FaceAnswer", "NoIndexError", "Searcher"]
