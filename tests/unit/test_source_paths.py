"""Image paths from any source stay inside their root and name regular files (issue class: nothing is
read from outside the source). Bad paths are counted skips, or under --strict errors naming the entry."""

import io
import json
import os
import threading

import pytest
from PIL import Image

from dentvlm.ingest.common import IngestError, resolve_inside
from dentvlm.ingest.images import NOT_A_FILE, ImagePolicy, ImageRejected, prepare_image
from dentvlm.sharding import build_shards

POLICY = ImagePolicy(long_side=32, jpeg_quality=80)


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (20, 120, 200)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def layout(tmp_path):
    """A ShareGPT folder (data/, with data/images/ok.jpg) and a secret image outside it."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "images" / "ok.jpg").write_bytes(jpeg())
    (tmp_path / "secret.jpg").write_bytes(jpeg())
    return root


def entry(image: str, index: int = 0) -> dict:
    return {"id": index, "messages": [{"role": "user", "content": "<image> What is shown?"},
                                      {"role": "assistant", "content": "Caries"}], "images": [image]}


def shard_sharegpt(root, images, out, **kwargs):
    path = root / "set.json"
    path.write_text(json.dumps([entry("images/ok.jpg", 0)] + [entry(p, i + 1) for i, p in enumerate(images)]))
    return build_shards(path, out, salt="s", val=0, test=0, policy=POLICY, workers=1, progress=False, **kwargs)


ESCAPES = ["../secret.jpg", "images/../../secret.jpg", "{abs}", "images/link-out.jpg", "images/\x00.jpg"]


def _path(template, root):
    return template.replace("{abs}", str(root.parent / "secret.jpg"))


@pytest.mark.parametrize("name", ESCAPES)
def test_sharegpt_paths_outside_the_root_are_counted_skips(layout, tmp_path, name):
    (layout / "images" / "link-out.jpg").symlink_to(layout.parent / "secret.jpg")
    manifest = shard_sharegpt(layout, [_path(name, layout)], tmp_path / "out")
    assert manifest["skipped"]["checkups"] == {"image_outside_source": 1}
    assert manifest["splits"]["train"]["checkups"] == 1  # the good entry


@pytest.mark.parametrize("name", ESCAPES)
def test_sharegpt_paths_outside_the_root_stop_strict_naming_the_entry(layout, tmp_path, name):
    (layout / "images" / "link-out.jpg").symlink_to(layout.parent / "secret.jpg")
    with pytest.raises(IngestError, match=r"set.json entry 1: image 0 .* not a file name inside the image root"):
        shard_sharegpt(layout, [_path(name, layout)], tmp_path / "out", strict=True)
    assert not (tmp_path / "out").exists()


def test_image_root_option_is_the_containment_root(layout, tmp_path):
    # with --image_root data/images, "../set.json"-style climbing to data/ is already outside
    path = layout / "set.json"
    path.write_text(json.dumps([entry("ok.jpg"), entry("../images/ok.jpg", 1), entry("../../secret.jpg", 2)]))
    manifest = build_shards(path, tmp_path / "out", salt="s", val=0, test=0, policy=POLICY, workers=1,
                            progress=False, image_root=layout / "images")
    assert manifest["splits"]["train"]["checkups"] == 2
    assert manifest["skipped"]["checkups"] == {"image_outside_source": 1}


def _in_thread(fn, timeout=20):
    """Run `fn` in a daemon thread: a FIFO read that blocks must fail the test, not hang the suite."""
    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 (handed back to the test)
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "blocked reading a special file"
    return result


@pytest.mark.parametrize("kind", ["fifo", "directory", "device-link"])
def test_special_files_inside_the_root_are_refused_without_blocking(layout, tmp_path, kind):
    target = layout / "images" / "special.jpg"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "directory":
        target.mkdir()
    else:  # a symlink to /dev/zero is outside the root, and endless if it were opened
        target.symlink_to("/dev/zero")
    result = _in_thread(lambda: shard_sharegpt(layout, ["images/special.jpg"], tmp_path / "out"))
    manifest = result["value"]
    skipped = manifest["skipped"]
    reasons = {**skipped["checkups"], **skipped["images"]}
    expected = "image_outside_source" if kind == "device-link" else NOT_A_FILE
    assert reasons.get(expected) == 1, skipped
    assert manifest["splits"]["train"]["checkups"] == 1


def test_prepare_image_refuses_devices_and_fifos_directly(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero", tmp_path):
        result = _in_thread(lambda p=path: prepare_image(p, POLICY))
        assert isinstance(result.get("error"), ImageRejected) and result["error"].reason == NOT_A_FILE, path


def test_code_release_refuses_symlinks_out_and_special_files(synth_release, tmp_path):
    import csv
    import shutil

    root = tmp_path / "release"
    shutil.copytree(synth_release, root)
    photos = root / "Images" / "Photographs"
    with (root / "complete_dataset.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    (tmp_path / "elsewhere.jpg").write_bytes(jpeg())
    first = [row["photographs"].split(",")[0] for row in rows[:3]]
    (photos / first[0]).unlink()
    (photos / first[0]).symlink_to(tmp_path / "elsewhere.jpg")  # a symlink that leaves the release
    (photos / first[1]).unlink()
    os.mkfifo(photos / first[1])  # would block a plain open()
    (photos / first[2]).unlink()
    (photos / first[2]).symlink_to("/dev/zero")  # endless
    result = _in_thread(lambda: build_shards(root, tmp_path / "out", salt="s", val=0, test=0, policy=POLICY,
                                             workers=1, progress=False))
    manifest = result["value"]
    assert manifest["skipped"]["checkups"] == {"image_outside_source": 2}
    assert manifest["skipped"]["images"] == {NOT_A_FILE: 1}
    strict = _in_thread(lambda: build_shards(root, tmp_path / "strict", salt="s", val=0, test=0, policy=POLICY,
                                             workers=1, progress=False, strict=True))
    assert isinstance(strict.get("error"), IngestError)
    assert "complete_dataset.csv row 1 " in str(strict["error"]) and "points outside" in str(strict["error"])


def test_resolve_inside_handles_hostile_names(tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert resolve_inside(tmp_path, "loop") is None
    assert resolve_inside(tmp_path, "a\x00b") is None
    assert resolve_inside(tmp_path, "") is None and resolve_inside(tmp_path, ".") is None
    assert resolve_inside(tmp_path, "x/../y.jpg") == (tmp_path / "y.jpg").resolve()


LINKED_FOLDERS = ["Images", "Images/Photographs", "Images/Radiographs"]


def release_with_linked_folder(synth_release, tmp_path, linked: str):
    """A copy of the release whose `linked` folder is a symlink to a copy of it outside the release."""
    import shutil

    root = tmp_path / "release"
    shutil.copytree(synth_release, root)
    outside = tmp_path / "elsewhere" / linked.replace("/", "_")
    shutil.move(root / linked, outside)
    (root / linked).symlink_to(outside, target_is_directory=True)
    return root


@pytest.mark.parametrize("linked", LINKED_FOLDERS)
def test_an_image_folder_linked_out_of_the_release_is_not_followed(synth_release, tmp_path, linked):
    """Containment is judged against the release folder the user named, not against an image folder
    that was itself resolved through a link (it used to shard the files behind the link without a skip)."""
    root = release_with_linked_folder(synth_release, tmp_path, linked)
    if linked != "Images/Radiographs":  # every checkup has photographs: none is left
        with pytest.raises(IngestError, match=r"no usable checkups \({'image_outside_source': 40} skipped\)"):
            build_shards(root, tmp_path / "out", salt="s", val=0, test=0, policy=POLICY, workers=1, progress=False)
        return
    manifest = build_shards(root, tmp_path / "out", salt="s", val=0, test=0, policy=POLICY, workers=1,
                            progress=False)
    assert manifest["skipped"]["checkups"]["image_outside_source"] > 0
    stored = manifest["splits"]["train"]["images"]
    assert stored["radiograph"] == 0 < stored["photograph"]


def test_a_linked_release_folder_itself_is_what_the_user_named(synth_release, tmp_path):
    """The release folder may itself be a link (a volume mounted elsewhere): its images are inside it."""
    link = tmp_path / "named"
    link.symlink_to(synth_release, target_is_directory=True)
    manifest = build_shards(link, tmp_path / "out", salt="s", val=0, test=0, policy=POLICY, workers=1,
                            progress=False)
    assert manifest["skipped"]["checkups"].get("image_outside_source", 0) == 0


@pytest.mark.parametrize("linked", LINKED_FOLDERS)
def test_predict_refuses_images_behind_a_linked_folder(synth_release, tmp_path, linked):
    from dentvlm.predict.sources import NewCheckup, Refused, read_new_checkups

    root = release_with_linked_folder(synth_release, tmp_path, linked)
    items = list(read_new_checkups(root))
    refused = [i for i in items if isinstance(i, Refused) and i.reason == "image_outside_source"]
    kept = [i for i in items if isinstance(i, NewCheckup)]
    assert refused and all(str(tmp_path / "elsewhere") not in str(p) for c in kept for p, _ in c.images)
