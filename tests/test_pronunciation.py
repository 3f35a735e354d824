"""Saying it right: lexicons, the SSML subset, Piper's `[[ ]]` phoneme escape on both runtimes, speed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer.chunks import HEADING_END, LINE_BREAK
from producer.inputs import read_inputs
from producer.lexicon import Entry, Lexicon, parse_lexicon, vowelless_words
from producer.spoken import spoken_chunks
from producer.ssml import is_ssml, parse_ssml
from producer.submit import submit
from schemas.db import open_store
from schemas.errors import InvalidInput
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings
from schemas.status import AudioFormat, BreakKind
from schemas.tables import Job
from tests.conftest import TEST_VOICE_DIRS

# ------------------------------------------------------------------------------------------ lexicon


def test_lexicon_file_whole_words_case_and_longest_match() -> None:
    lexicon = parse_lexicon("# names\n\nnasa\tNay-sah\nUS\t[[ juːˈɛs ]]\ncat\tkitty\nNew York\tNoo Yawk\n"
                            "new\tneu\n", "lex.tsv")
    applied = lexicon.apply("NASA, Nasa and the US; us. A catalog, a cat, Cat. New York is new. [[ cat ]]")
    assert applied.text == ("Nay-sah, Nay-sah and the [[ juːˈɛs ]]; us. A catalog, a kitty, kitty. Noo Yawk is "
                            "neu. [[ cat ]]")
    assert applied.unused == []
    assert lexicon.apply("nothing here").unused == ["New York", "US", "cat", "nasa", "new"]
    assert lexicon.entries["US"].is_phonemes and not lexicon.entries["cat"].is_phonemes


@pytest.mark.parametrize(("text", "message"), [
    ("cat kitty\n", "lex.tsv:1: expected WORD<TAB>REPLACEMENT"),
    ("ok\tfine\n\t x\n", "lex.tsv:2: word is empty"),
    ("cat\t \n", "lex.tsv:1: replacement is empty"),
    ("cat\t[[ kæt\n", "lex.tsv:1: unbalanced [[ ]]"),
])
def test_bad_lexicon_lines_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        parse_lexicon(text, "lex.tsv")


def test_phonemes_are_never_cut_by_the_length_cap() -> None:
    lexicon = Lexicon([Entry("name", "[[ a b c d e f g h i j k l ]]")])
    chunks = spoken_chunks("Say the long name carefully and slowly for everyone here now.", language="en",
                           lexicon=lexicon, max_chunk_chars=20, where="t").chunks
    assert [c.text for c in chunks] == ["Say the long [[ a b c d e f g h i j k l ]] carefully and",
                                        "slowly for everyone", "here now."]


def test_a_jobs_lexicon_overrides_the_voices_and_vowelless_words_are_reported() -> None:
    merged = Lexicon([Entry("cat", "kitty"), Entry("dog", "doggy")]).merged(Lexicon([Entry("cat", "feline")]))
    assert merged.apply("cat dog").text == "feline doggy"
    assert vowelless_words("XKCD and Pfft, a sky, [[ ksd ]] nth", Lexicon([Entry("nth", "enth")])) == ["Pfft", "XKCD"]


_WORDS = st.sampled_from(["cat", "Cat", "CAT", "catalog", "dog", "US", "us", "New York", "new", "a", "b"])
_SEPARATORS = st.sampled_from([" ", ", ", ". ", "-", "'", "\n", "", "[[ cat ]]"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_WORDS, _SEPARATORS), max_size=30),
       st.dictionaries(st.sampled_from(["cat", "US", "New York", "new", "dog", "b"]),
                       st.sampled_from(["kitty", "[[ kæt ]]", "x y", "cat"]), max_size=5))
def test_lexicon_loses_and_duplicates_nothing(parts: list[tuple[str, str]], entries: dict[str, str]) -> None:
    text = "".join(w + s for w, s in parts)
    lexicon = Lexicon(Entry(w, r) for w, r in entries.items())
    spans = lexicon.spans(text)
    assert "".join(s.source for s in spans) == text  # every character once, in order
    assert lexicon.apply(text).text == "".join(s.spoken for s in spans)
    for span in spans:
        if span.entry is None:  # nothing left unreplaced that an entry matches as a whole word
            for word in entries:
                flags = re.IGNORECASE if word == word.lower() else 0
                outside = re.sub(r"\[\[.*?\]\]", "", span.source)
                assert not re.search(rf"(?<!\w){re.escape(word)}(?!\w)", outside, flags), (span, word)
        else:
            assert span.source.lower() == span.entry.word.lower()
            if span.entry.word != span.entry.word.lower():
                assert span.source == span.entry.word


# --------------------------------------------------------------------------------------------- SSML


def _spoken(source: str, lexicon: Lexicon | None = None) -> list[tuple[str, BreakKind]]:
    result = spoken_chunks(source, language="en", lexicon=lexicon or Lexicon(), max_chunk_chars=400, where="t")
    return [(c.text, c.break_after) for c in result.chunks]


def test_ssml_tags_become_text_pauses_and_phonemes() -> None:
    source = """<?xml version="1.0"?>
<speak version="1.1" xmlns="http://www.w3.org/2001/10/synthesis">
  <p><s>Hello <break time="700ms"/> world</s><s>NASA flew on
  <say-as interpret-as="date" format="mdy">3/5/2024</say-as>.</s></p>
  <p>Call <say-as interpret-as="telephone">555-0199</say-as>, spell <say-as interpret-as="characters">ABC</say-as>,
  the <say-as interpret-as="ordinal">3</say-as> of <say-as interpret-as="cardinal">1,204</say-as>
  <sub alias="World Wide Web">WWW</sub>: a <phoneme alphabet="ipa" ph="təˈmɑːtoʊ">tomato</phoneme>.
  <break strength="x-strong"/>The end.</p>
</speak>"""
    assert is_ssml(source) and not is_ssml("Plain <speak> text")
    assert _spoken(source, Lexicon([Entry("nasa", "Nay-sah")])) == [
        ("Hello", BreakKind.PARAGRAPH),
        ("world", BreakKind.LINE),
        ("Nay-sah flew on March fifth, twenty twenty-four.", BreakKind.PARAGRAPH),
        ("Call five five five, zero one nine nine, spell A B C, the third of one thousand, two hundred and four "
         "World Wide Web: a [[ təˈmɑːtoʊ ]].", BreakKind.CHAPTER),
        ("The end.", BreakKind.SENTENCE),
    ]


def test_ssml_whole_document_rate_and_voice_partial_ones_are_spans() -> None:
    whole = parse_ssml('<speak><prosody rate="150%"><voice name="piper:joe">Fast.</voice></prosody></speak>', "t")
    assert (whole.speed, whole.voice, whole.warnings) == (1.5, "piper:joe", [])
    assert [(s.voice, s.speed) for s in whole.spans] == [(None, None)]  # the document's, not a span's
    partial = parse_ssml('<speak>Slow <prosody rate="slow">and</prosody> <emphasis>loud</emphasis>.</speak>', "t")
    assert partial.speed is None and partial.text == "Slow and loud."
    assert partial.warnings == ["SSML tag <emphasis> is not supported: its text is spoken as it is"]
    assert [(s.text, s.speed) for s in partial.spans] == [("Slow ", None), ("and ", 0.75), ("loud.", None)]


@pytest.mark.parametrize(("source", "message"), [
    ("<speak>\n  <p>Hello</s>\n</speak>", "doc.ssml:2:13: malformed SSML: mismatched tag"),
    ("<speak>a & b</speak>", "doc.ssml:1:11: malformed SSML: not well-formed (invalid token)"),
    ("<p>Hello</p>", "doc.ssml: the SSML root element must be <speak>"),
    ('<speak><break time="forever"/></speak>', "write a duration such as 500ms"),
    ('<speak><prosody rate="900%">x</prosody></speak>', "use x-slow..x-fast or 25%..400%"),
    ('<!DOCTYPE speak [<!ENTITY x "y">]><speak>&x;</speak>', "DTD or entity declarations is refused"),
])
def test_malformed_ssml_is_one_line_with_line_and_column(source: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)) as caught:
        parse_ssml(source, "doc.ssml")
    assert "\n" not in str(caught.value)


_PLAIN = st.text(alphabet=st.sampled_from(list("abcdefgh XYZ,.'?!\n\t&<>\"")), max_size=12)
_WRAPPERS = st.sampled_from(["", "p", "s", "emphasis", "prosody", "mark", "break", "fast", "voice", "nested"])
_OPEN = {"fast": ('<prosody rate="200%">', "</prosody>"), "voice": ('<voice name="piper:joe">', "</voice>"),
         "nested": ('<voice name="piper:joe"><prosody rate="50%">', "</prosody></voice>")}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_WRAPPERS, _PLAIN), max_size=12))
def test_ssml_keeps_every_character_of_its_text(parts: list[tuple[str, str]]) -> None:
    """Outside what markup says (sub, say-as, phoneme), the spoken text is the document's text: same
    characters, same order, nothing lost or doubled; only whitespace and pause marks differ."""
    body = ""
    for tag, text in parts:
        if tag == "break":
            body += f'<break time="1s"/>{escape(text)}'
        elif tag in _OPEN:
            body += _OPEN[tag][0] + escape(text) + _OPEN[tag][1]
        elif tag:
            body += f"<{tag}>{escape(text)}</{tag}>"
        else:
            body += escape(text)
    doc = parse_ssml(f"<speak>{body}</speak>", "t")
    def squeeze(s: str) -> str:
        return re.sub(rf"[\s{LINE_BREAK}{HEADING_END}]+", "", s)
    assert squeeze(doc.text) == squeeze("".join(text for _, text in parts))
    # Cut into voice and rate spans, the text is still all there once, in order; neighbours differ.
    assert squeeze("".join(span.text for span in doc.spans)) == squeeze(doc.text)
    assert all(span.text.strip() for span in doc.spans)
    assert all((a.voice, a.speed) != (b.voice, b.speed) for a, b in zip(doc.spans, doc.spans[1:], strict=False))
    # Each piece lies in a span of its wrapper's voice and rate (a setting the whole text shares is the
    # document's, not a span's), neighbours of the same settings merged.
    wanted = {"fast": (None, 2.0), "voice": ("piper:joe", None), "nested": ("piper:joe", 0.5)}
    pieces = [(wanted.get(tag, (None, None)), squeeze(text)) for tag, text in parts if squeeze(text)]
    whole_voice, whole_rate = (len({key[n] for key, _ in pieces}) == 1 for n in (0, 1))
    expected: list[tuple[tuple[str | None, float | None], str]] = []
    for (voice, rate), text in pieces:
        key = (None if whole_voice else voice, None if whole_rate else rate)
        if expected and expected[-1][0] == key:
            expected[-1] = (key, expected[-1][1] + text)
        else:
            expected.append((key, text))
    if len(expected) == 1:
        expected = [((None, None), expected[0][1])]
    assert [((span.voice, span.speed), squeeze(span.text)) for span in doc.spans] == expected


def test_ssml_files_and_jsonl_lexicon_and_speed_are_read(tmp_path: Path) -> None:
    (tmp_path / "a.ssml").write_text("<speak>Hi <break/> there.</speak>", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "cat", "speed": 1.5, "lexicon": {"cat": "kitty"}}) + "\n",
                                      encoding="utf-8")
    a, b = read_inputs([str(tmp_path / "a.ssml"), str(tmp_path / "b.jsonl")], None,  # type: ignore[arg-type]
                       voice=None, format=AudioFormat.WAV, priority=5)
    assert a.text.startswith("<speak>") and (b.speed, b.lexicon) == (1.5, {"cat": "kitty"})
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "cat", "speed": 9}) + "\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"c.jsonl:1: invalid speed"):
        read_inputs([str(tmp_path / "c.jsonl")], None, voice=None, format=AudioFormat.WAV,  # type: ignore[arg-type]
                    priority=5)


# ------------------------------------------------------------------------------------------- submit


def test_lexicon_and_speed_are_part_of_the_key_and_stored(db_url: str, tmp_path: Path, tiny_vits_dir: Path) -> None:
    settings_ = ProducerSettings(database_url=db_url, output_dir=tmp_path, voice_dirs=TEST_VOICE_DIRS)
    store = open_store(db_url)
    (tiny_vits_dir / "lexicon.tsv").write_text("dog\tdoggy\ncat\tpuss\n", encoding="utf-8")  # the voice's default
    try:
        base = {"text": "The cat and the dog. XKCD.", "voice": str(tiny_vits_dir)}
        plain, lexed, fast, again = submit([JobRequest(**base), JobRequest(**base, lexicon={"cat": "kitty"}),
                                            JobRequest(**base, speed=2.0),
                                            JobRequest(**base, lexicon={"cat": "kitty"})], settings_, store,
                                           publisher=None)
        assert len({plain.id, lexed.id, fast.id}) == 3 and again.id == lexed.id and not again.created
        with store.read() as session:
            job = session.get_one(Job, lexed.id)
            assert job.options == {"lexicon": [["cat", "kitty"]]}
            assert session.get_one(Job, fast.id).options == {"speed": 2.0}
            from schemas.tables import Chunk
            texts = [c.text for c in session.query(Chunk).filter(Chunk.job_id == lexed.id).order_by(Chunk.idx)]
        assert texts == ["The kitty and the doggy.", "XKCD."]
        assert any("XKCD" in w for w in job.warnings)
    finally:
        (tiny_vits_dir / "lexicon.tsv").unlink()
        store.dispose()


# ------------------------------------------------------------------------------ phonemes and speed


@pytest.mark.slow
def test_the_phoneme_escape_matches_piper_on_both_runtimes(tmp_path: Path) -> None:
    """`[[ ]]` phonemes go to the voice as piper-tts sends them, through one encoder that both runtimes
    share; the ONNX model then says them (audio comes out) and speed 2 halves the audio."""
    from piper import PiperVoice

    from schemas.voices import BUNDLED_PIPER
    from worker.device import parse_simulated
    from worker.engine import ChunkInput, start_engine
    from worker.phonemes import PiperEncoder, read_piper_config
    from worker.precision import choose_policy
    from worker.voices import load_voice, verify_bundled

    onnx_file, config_file = verify_bundled(BUNDLED_PIPER["joe"])
    encoder = PiperEncoder(read_piper_config(config_file))
    piper_voice = PiperVoice.load(onnx_file, config_path=config_file)
    for text in ["Say [[ təˈmɑːtoʊ ]] now.", "[[ hɛloʊ ]] world. Next one.", "A b [[x]]c. [[ y ]]"]:
        assert encoder.sentences(text) == piper_voice.phonemize(text)
    voice = load_voice("piper:joe", tmp_path, onnx=True)
    assert voice.encode("[[ həˈloʊ ]]").ids == encoder("[[ həˈloʊ ]]").ids
    cpu = parse_simulated("cpu::8")
    engine = start_engine(voice, cpu, choose_policy(cpu, runtime="onnxruntime"), deterministic=True)
    got: dict[int, int] = {}
    engine.synthesize([ChunkInput(0, "Say [[ təˈmɑːtoʊ ]] slowly, please.", 0),
                       ChunkInput(1, "Say [[ təˈmɑːtoʊ ]] slowly, please.", 0, speed=2.0)],
                      lambda audio: got.__setitem__(audio.idx, len(audio.samples)))
    assert str(engine.runtime) == "onnxruntime" and got[0] > 20_000
    # Each phoneme's frame count is rounded up after scaling, so short phonemes keep a frame: measured 0.61.
    assert 0.45 < got[1] / got[0] < 0.7


def test_half_speed_gives_twice_the_audio_on_torch(tiny_vits_dir: Path) -> None:
    """The tiny random model predicts about one frame per token, which speeding up cannot shorten (frame
    counts are rounded up), so torch's length scale is checked the other way: speed 0.5, twice as long."""
    from worker.device import parse_simulated
    from worker.engine import ChunkInput, start_engine
    from worker.loaded_voice import load_folder_voice
    from worker.precision import choose_policy

    cpu = parse_simulated("cpu::8")
    engine = start_engine(load_folder_voice(tiny_vits_dir), cpu, choose_policy(cpu, runtime="torch"),
                          deterministic=True)
    text = "the quick brown fox jumps over the lazy dog, again and again and again."
    got: dict[int, np.ndarray] = {}
    run = engine.synthesize([ChunkInput(0, text, 0), ChunkInput(1, text, 0, speed=0.5), ChunkInput(2, text, 0)],
                            lambda audio: got.__setitem__(audio.idx, audio.samples))
    assert run.batches == 2  # one speed per batch
    assert np.array_equal(got[0], got[2])
    assert len(got[1]) / len(got[0]) == pytest.approx(2.0, abs=0.1)
