"""In a Korean lesson (``meshlab.set_language("ko")``) the widgets speak Korean; what the model
prints (rule text, decisions, chain names) stays as iptables prints it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

import meshlab
from meshlab.widgets import PacketBuilder, RuleLab, StepPlayer

HANGUL = re.compile(r"[\uac00-\ud7a3]")
UID = "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN"
GID = "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN"


@pytest.fixture
def korean() -> Iterator[None]:
    meshlab.set_language("ko")
    try:
        yield
    finally:
        meshlab.set_language("en")


def _texts(widget) -> list[str]:
    """Every label, tooltip, option and HTML text of ``widget`` and its children."""
    found = [getattr(widget, name) for name in ("description", "tooltip", "placeholder")
             if isinstance(getattr(widget, name, None), str)]
    found += list(getattr(widget, "_options_labels", ()))
    if type(widget).__name__ == "HTML":
        found.append(widget.value)
    for child in getattr(widget, "children", ()):
        found += _texts(child)
    return [text for text in found if text]


def test_the_step_player_speaks_korean(korean: None) -> None:
    p = StepPlayer("outbound")
    assert [p.play_button.description, p.back.description, p.next.description] == \
        ["재생", "이전", "다음"]
    assert p.slider.description == "9단계"
    assert p.text.value.startswith("<b>9단계: the app&#x27;s connection enters OUTPUT</b>")
    assert HANGUL.search(p.text.value) and "connect()" in p.text.value
    p.slider.value = 2
    assert "ISTIO_REDIRECT로 점프합니다" in p.text.value
    assert "<b>건너뛴 규칙</b>" in p.text.value
    assert "jump ISTIO_REDIRECT" in p.text.value, "the model's decision stays as it is"
    assert all(HANGUL.search(why) for why in p.static()["why"])
    p.play_button.click()
    assert p.play_button.description == "일시 정지"
    assert repr(p).startswith("StepPlayer: ") and HANGUL.search(repr(p))


def test_the_rule_lab_and_the_packet_builder_speak_korean(korean: None) -> None:
    lab = RuleLab(["outbound", "inbound"])
    boxes = {b.description: b for b in lab.toggles}
    assert UID in boxes, "a rule's checkbox is the rule, as iptables-save writes it"
    assert "기본 사이드카 파드의 규칙" in " ".join(_texts(lab))
    boxes[UID].value = False
    boxes[GID].value = False
    assert "<b>루프</b>: outbound" in lab.result.value
    assert "<th>시나리오</th>" in lab.result.value
    assert lab.static().loc["outbound", "change"] == "loop", "the frame keeps its values"

    builder = PacketBuilder()
    texts = _texts(builder)
    assert {"프로세스", "목적지", "포트"} <= set(texts)
    assert any(text.startswith("<p><b>판정 ACCEPT</b>") for text in texts)
    builder.port.value = "http"
    assert "<b>문제:</b> 포트 &#x27;http&#x27;은(는) 정수가 아닙니다" in builder.error.value


def test_english_again_after_korean(korean: None) -> None:
    meshlab.set_language("en")
    p = StepPlayer("outbound")
    assert p.play_button.description == "Play" and "Step 9: " in p.text.value
    assert not any(HANGUL.search(text) for text in _texts(p))
