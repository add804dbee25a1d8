"""The request and response models of ``cascade serve`` (pydantic), with the server's limits in their schema.

No ``from __future__ import annotations`` here: pydantic and FastAPI read these annotations at runtime.
"""
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (larger requests get a 422 naming the field)."""

    max_k: int = 1000
    max_queries: int = 64
    max_query_chars: int = 2000
    max_docs: int = 1000
    max_doc_chars: int = 100_000


def models(limits: Limits, names: Sequence[str]):
    """The request and response models, with this server's limits and pipeline names in their schema."""
    from typing import Annotated

    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, model_validator

    Query = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_query_chars,
                                             pattern=r"\S")]  # not blank
    Doc = Annotated[str, StringConstraints(max_length=limits.max_doc_chars)]
    K = Annotated[StrictInt, Field(ge=1, le=limits.max_k)]
    if TYPE_CHECKING:
        from builtins import str as Name  # to the type checker a pipeline name is a string
    else:
        Name = Literal[tuple(names)]  # at runtime: one of this server's pipeline names, in the schema

    class SearchRequest(BaseModel):
        """Either ``query`` or ``queries``; the top ``k`` of each from ``pipeline`` (default: the first)."""

        model_config = ConfigDict(extra="forbid")
        query: Query | None = None
        queries: Annotated[list[Query], Field(min_length=1, max_length=limits.max_queries)] | None = None
        k: K = 10
        pipeline: Name | None = None

        @model_validator(mode="after")
        def one_of(self):
            if (self.query is None) == (self.queries is None):
                raise ValueError("give exactly one of 'query' (a string) or 'queries' (a list of strings)")
            return self

    class RerankRequest(BaseModel):
        """``docs`` (a list of texts, or an object id -> text) ranked for ``query``; the top ``k`` (default all)."""

        model_config = ConfigDict(extra="forbid")
        query: Query
        docs: (
            Annotated[list[Doc], Field(min_length=1, max_length=limits.max_docs)]
            | Annotated[dict[str, Doc], Field(min_length=1, max_length=limits.max_docs)]
        )
        k: K | None = None
        pipeline: Name | None = None

    class HitOut(BaseModel):
        id: str
        score: float
        text: str
        rank: int
        index: int

    class StageOut(BaseModel):
        stage: str
        k: int | None
        kept: int | None = Field(None, description="candidates this stage kept for this query")
        ms: float = Field(description="the stage's wall time for the whole batch this query ran in")
        phases_ms: dict[str, float] = {}

    class QueryResult(BaseModel):
        query: str
        hits: list[HitOut]
        stages: list[StageOut]

    class BatchOut(BaseModel):
        queries: int
        requests: int
        queue_ms: float
        run_ms: float

    class SearchResponse(BaseModel):
        pipeline: str
        results: list[QueryResult]
        batch: BatchOut
        ms: float

    class RerankResponse(BaseModel):
        pipeline: str
        query: str
        hits: list[HitOut]
        ms: float

    DocId = Annotated[str, StringConstraints(min_length=1, max_length=1000)]

    class DocIn(BaseModel):
        """One document to add: an id, its text (and title), and metadata (plain JSON values)."""

        model_config = ConfigDict(extra="forbid")
        id: DocId
        text: Doc
        title: Doc | None = None
        metadata: dict[str, Any] | None = None

    Docs = Annotated[list[DocIn], Field(min_length=1, max_length=limits.max_docs)]

    class AddRequest(BaseModel):
        """Documents to add (POST) or to replace by id (PUT) in the saved index ``pipeline`` serves."""

        model_config = ConfigDict(extra="forbid")
        docs: Docs
        pipeline: Name | None = None

    class DeleteRequest(BaseModel):
        """Ids of documents to delete; ``missing="ignore"`` skips ids the index does not hold."""

        model_config = ConfigDict(extra="forbid")
        ids: Annotated[list[DocId], Field(min_length=1, max_length=limits.max_docs)]
        missing: Literal["error", "ignore"] = "error"
        pipeline: Name | None = None

    class WriteResponse(BaseModel):
        pipeline: str
        changed: int = Field(description="documents given (added, replaced or deleted)")
        documents: int = Field(description="documents the index holds now")
        generation: int | None
        ms: float

    return SimpleNamespace(SearchRequest=SearchRequest, RerankRequest=RerankRequest, SearchResponse=SearchResponse,
                           RerankResponse=RerankResponse, AddRequest=AddRequest, DeleteRequest=DeleteRequest,
                           WriteResponse=WriteResponse)
