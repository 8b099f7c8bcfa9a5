import io
import pickle
import tarfile

import pytest
from PIL import Image

from dentvlm.data.shards import ShardWriter, decode_image, iter_shard
from dentvlm.records import Checkup


def jpeg_bytes(size=(32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(out, "JPEG")
    return out.getvalue()


def checkup(key: str, images: int = 1) -> Checkup:
    return Checkup(key=key, patient="p", modalities=["photograph"] * images, labels=["caries"])


def test_shards_are_bounded_deterministic_and_read_back(tmp_path):
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        writer = ShardWriter(tmp_path / run, "train", max_count=3, max_bytes=10**9)
        for i in range(7):
            writer.write(checkup(f"k{i}", images=2), [jpeg_bytes(), jpeg_bytes()], {"classification"})
        infos = writer.close()
        assert [i.samples for i in infos] == [3, 3, 1]
        assert infos[0].tasks == {"classification": 3}
    for name in ("train-000000.tar", "train-000002.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    samples = list(iter_shard(tmp_path / "a" / "train-000001.tar"))
    assert [s.checkup.key for s in samples] == ["k3", "k4", "k5"]
    assert len(samples[0].images) == 2


def test_byte_bound_starts_new_shards(tmp_path):
    writer = ShardWriter(tmp_path, "val", max_count=100, max_bytes=3 * (len(jpeg_bytes()) + 3000))
    for i in range(5):
        writer.write(checkup(f"k{i}"), [jpeg_bytes()], set())
    assert len(writer.close()) >= 2


def test_unfinished_shard_never_looks_finished(tmp_path):
    writer = ShardWriter(tmp_path, "train", max_count=10, max_bytes=10**9)
    writer.write(checkup("k0"), [jpeg_bytes()], set())
    # a crash here leaves only the .partial file
    assert [p.name for p in tmp_path.iterdir()] == ["train-000000.tar.partial"]
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["train-000000.tar"]


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))  # unpickling creates the file


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_reader_never_decodes_members_it_does_not_expect(tmp_path):
    marker = tmp_path / "pwned"
    shard = tmp_path / "evil.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "k0.json", checkup("k0").to_json())
        _add(tar, "k0.img0.jpg", jpeg_bytes())
        _add(tar, "k0.pyd", pickle.dumps(_Exploit(str(marker))))
        _add(tar, "k0.pth", pickle.dumps(_Exploit(str(marker))))
    [sample] = list(iter_shard(shard))
    assert sample.checkup.key == "k0" and len(sample.images) == 1
    assert not marker.exists()
    # the exploit is real: a generic unpickler would have run it
    pickle.loads(pickle.dumps(_Exploit(str(marker)))).close()
    assert marker.exists()


def test_reader_errors_name_shard_and_key(tmp_path):
    shard = tmp_path / "bad.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "k0.json", checkup("k0", images=2).to_json())
        _add(tar, "k0.img0.jpg", jpeg_bytes())
    with pytest.raises(ValueError, match=r"bad.tar sample 'k0': record lists 2 images, img1.jpg missing"):
        list(iter_shard(shard))
    with tarfile.open(shard, "w") as tar:
        _add(tar, "k1.json", checkup("other").to_json())
        _add(tar, "k1.img0.jpg", jpeg_bytes())
    with pytest.raises(ValueError, match="differs from the member name"):
        list(iter_shard(shard))


def test_decode_image_checks_format_and_bounds():
    assert decode_image(jpeg_bytes((400, 300)), "w", long_side=100).size == (100, 75)
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    with pytest.raises(ValueError, match="JPEG only"):
        decode_image(png.getvalue(), "shard x image 0")
    with pytest.raises(ValueError, match="bad image in shard"):
        decode_image(b"garbage", "w")


def test_deeply_nested_record_is_a_clear_error(tmp_path):
    shard = tmp_path / "deep.tar"
    nested = b'{"key": "k0", "info": ' + b"[" * 1_000_000 + b"]" * 1_000_000 + b"}"  # under the size limit
    with tarfile.open(shard, "w") as tar:
        _add(tar, "k0.json", nested)
    with pytest.raises(ValueError, match=r"deep.tar sample 'k0': record nested too deeply"):
        list(iter_shard(shard))


def test_oversized_members_are_refused_before_they_are_read(tmp_path):
    shard = tmp_path / "big.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "k0.json", b"{" + b" " * 4_000_001 + b"}")
    with pytest.raises(ValueError, match=r"big.tar sample 'k0': member 'json' is 4,000,003 bytes, over the limit"):
        list(iter_shard(shard))


def test_unreadable_tar_is_named(tmp_path):
    shard = tmp_path / "junk.tar"
    shard.write_bytes(b"this is not a tar file at all" * 40)
    with pytest.raises(ValueError, match=r"junk.tar: not a readable shard"):
        list(iter_shard(shard))
