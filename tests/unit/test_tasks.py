import pytest
from PIL import Image

from dentvlm.data.tasks import format_checkup, format_report, parse_report, select_images
from dentvlm.labels import DEFAULT_CLASSES
from dentvlm.records import Checkup

CHECKUP = Checkup(
    key="k", patient="p", modalities=["radiograph", "photograph", "photograph"],
    info={"age": "41", "chief_complaint": "bleeding gums"},
    report={"examination": "red gum line\non 11", "diagnosis": "Gingivitis; caries of 36", "remarks": "none"},
    labels=["caries", "gingivitis", "cracked tooth"],
)
IMAGES = [Image.new("RGB", (4, 4))] * 2


def user_text(example):
    return "".join(p.get("text", "<image>") for p in example.messages[0]["content"])


def test_classification_prompt_in_code_style():
    example = format_checkup(CHECKUP, IMAGES, "classification", DEFAULT_CLASSES)
    assert user_text(example).startswith("image-1: <image>\nimage-2: <image>\nPatient information:\n"
                                         "chief complaint: bleeding gums\nexamination: red gum line\non 11\n"
                                         "Which of these oro-dental conditions")
    assert example.target == "gingivitis, caries" and example.labels == ["gingivitis", "caries"]
    assert example.messages[1] == {"role": "assistant", "content": [{"type": "text", "text": "gingivitis, caries"}]}


def test_modalities_choose_images_and_text():
    images_only = format_checkup(CHECKUP, IMAGES, "classification", DEFAULT_CLASSES, modality="images")
    text_only = format_checkup(CHECKUP, IMAGES, "classification", DEFAULT_CLASSES, modality="text")
    assert "Patient information" not in user_text(images_only) and len(images_only.images) == 2
    assert "<image>" not in user_text(text_only) and text_only.images == []


def test_report_prompt_and_target():
    example = format_checkup(CHECKUP, IMAGES, "report", DEFAULT_CLASSES)
    assert "age: 41\nchief complaint: bleeding gums\nWrite the diagnostic report" in user_text(example)
    assert example.target == "examination: red gum line\non 11\ndiagnosis: Gingivitis; caries of 36\nremarks: none"
    assert parse_report(example.target) == CHECKUP.report


def test_parse_report_tolerates_case_and_unknown_lines():
    text = "Diagnosis: caries\nTreatment plan: filling\nthen a crown\nDoctor's orders: rest"
    assert parse_report(text) == {"diagnosis": "caries", "treatment_plan": "filling\nthen a crown",
                                  "doctors_orders": "rest"}
    assert format_report(parse_report(text)).startswith("diagnosis: caries\ntreatment plan:")


def test_select_images_orders_modalities_and_caps():
    assert select_images(CHECKUP, ("photograph", "radiograph"), 8) == [1, 2, 0]
    assert select_images(CHECKUP, ("photograph",), 1) == [1]


def test_chat_splits_placeholders_and_ends_at_last_answer():
    chat = Checkup(key="k", patient="p", modalities=["photograph"] * 2, conversation=[
        {"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "A."},
        {"role": "user", "content": "And<image>?"}])
    example = format_checkup(chat, IMAGES, "chat", DEFAULT_CLASSES)
    assert [m["role"] for m in example.messages] == ["user", "assistant"]
    assert example.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "Who?"}]
    assert example.target == "A." and len(example.images) == 1


def test_unknown_task_or_modality():
    with pytest.raises(ValueError, match="unknown task"):
        format_checkup(CHECKUP, IMAGES, "segmentation", DEFAULT_CLASSES)
    with pytest.raises(ValueError, match="unknown modality"):
        format_checkup(CHECKUP, IMAGES, "report", DEFAULT_CLASSES, modality="audio")


def test_a_checkup_with_none_of_the_classes_answers_none():
    healthy = Checkup(key="h", patient="p", modalities=[], labels=[], report={"diagnosis": "No disease"})
    other = Checkup(key="o", patient="p", modalities=[], labels=["cracked tooth"])
    for checkup in (healthy, other):
        example = format_checkup(checkup, [], "classification", DEFAULT_CLASSES)
        assert example.target == "none" and example.labels == []
        assert "or none if it shows none of them" in user_text(example)
    custom = format_checkup(healthy, [], "classification", DEFAULT_CLASSES, none_answer="no findings")
    assert custom.target == "no findings" and "or no findings if" in user_text(custom)


def test_none_answer_must_read_as_no_finding():
    from dentvlm.data.datamodule import DentDataModule
    from dentvlm.labels import LabelParser

    assert LabelParser(DEFAULT_CLASSES).parse("none") == []
    with pytest.raises(ValueError, match="data.none_answer 'nothing to see'"):
        DentDataModule(none_answer="nothing to see")
