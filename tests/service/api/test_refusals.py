"""A use-case's refusal (service/domain/refusals.py) is answered by the app's one handler
(service/api/errors.py): every kind the service defines has its status there, so a new kind
cannot surface as a 500."""

from fastapi.testclient import TestClient

import service.app  # noqa: F401 - every module that defines a refusal kind is imported by the app
from service.api.errors import refusal_response, refusal_status
from service.app import create_app
from service.control.studies import StudyConflict
from service.domain.refusals import Conflict, Gone, InvalidField, NotFound, OverQuota, Refused
from service.settings import Settings


def _kinds(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _kinds(sub)
    return out


def test_every_refusal_kind_has_a_status():
    kinds = _kinds(Refused)
    assert {NotFound, Conflict, Gone, InvalidField, OverQuota, StudyConflict} <= kinds
    for kind in kinds:
        exc = kind.__new__(kind)
        exc.field, exc.message = None, "m"
        assert refusal_status(exc) in (404, 409, 410, 422, 429), kind


def test_the_answers_keep_the_shapes_of_httpexception_and_apierror():
    r = refusal_response(StudyConflict("study 'x' is already cancelled"))
    assert (r.status_code, r.body) == (409, b'{"detail":"study \'x\' is already cancelled"}')
    r = refusal_response(OverQuota("max_active_studies", "too many"))
    assert r.status_code == 429 and r.body == (b'{"detail":"max_active_studies: too many","errors":'
                                               b'[{"field":"max_active_studies","message":"too many"}]}')


def test_a_refusal_without_a_status_is_a_named_500_not_a_stopiteration(tmp_path):
    """A kind left out of STATUS (or a bare `Refused`) is a programming error: the app's 500
    names it, where `next()` over the kinds had raised StopIteration inside the async handler."""
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 's.db'}", start_runner=False))

    @app.get("/refuse-bare")
    def _refuse():
        raise Refused(None, "no kind")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/refuse-bare")
    assert r.status_code == 500 and "TypeError" in r.json()["detail"]
