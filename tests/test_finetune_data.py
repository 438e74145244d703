import json

import numpy as np
import pytest
from PIL import Image

from editpersist.errors import InputError
from editpersist.finetuners.data import load_caption_folder, load_dreambooth
from editpersist.finetuners.subjects import ToySubject, make_subject, relation
from editpersist.tasks.toy import toy_cases


def _img(path, color=(200, 10, 10), size=(48, 40)):
    Image.new("RGB", size, color).save(path)


def test_dreambooth_layout(tmp_path):
    (tmp_path / "dog").mkdir()
    for i in range(3):
        _img(tmp_path / "dog" / f"{i:02d}.jpg")
    (tmp_path / "prompts_and_classes.txt").write_text("subject_name,class\ndog,dog\ncat2,cat\n")
    data = load_dreambooth(tmp_path, "dog", 32)
    assert data.images.shape == (3, 32, 32, 3) and data.captions == ["a sks dog"] * 3
    with pytest.raises(InputError, match="no class listed for subject 'bird'"):
        load_dreambooth(tmp_path, "bird", 32)
    with pytest.raises(InputError, match="cat2: image folder does not exist"):
        load_dreambooth(tmp_path, "cat2", 32)


def test_caption_folder_jsonl_and_bad_image(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not an image")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "a red thing"}) + "\n")
    data = load_caption_folder(tmp_path, 16)
    assert data.captions == ["a red thing"] and data.images[0, 8, 8].tolist() == [200, 10, 10]
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "b.png", "text": "x"}) + "\n")
    with pytest.raises(InputError, match=r"b\.png: unreadable image"):
        load_caption_folder(tmp_path, 16)


def test_empty_folder_names_itself(tmp_path):
    with pytest.raises(InputError, match="no metadata.jsonl or metadata.csv"):
        load_caption_folder(tmp_path, 16)


def test_subject_relations_to_toy_edits():
    cases = toy_cases()
    square = ToySubject("sks-square", "square", "purple")
    circle = ToySubject("sks-circle", "circle", "green")
    blue_tri = ToySubject("sks-triangle", "triangle", "blue")
    appearance = cases["appearance"][0]  # circle: red -> blue
    assert relation(circle, appearance) == "related"
    assert relation(square, appearance) == "unrelated"
    assert relation(blue_tri, appearance) == "tangential"  # shares the edit's new colour
    role = cases["role"][0]  # king: square -> triangle
    assert relation(square, role) == "tangential" and relation(blue_tri, role) == "tangential"
    images = square.images(4, seed=0)
    assert images.images.shape == (4, 32, 32, 3) and set(images.captions) == {"a sks square"}
    assert np.array_equal(images.images, square.images(4, seed=0).images)


def test_the_studys_identifier_word_captions_every_subject(tmp_path):
    """`finetune_data.identifier` (the workflow copies it into every subject record) is the word
    of the instance captions, for a toy subject's renders and a photo folder alike; DreamBooth's
    "sks" when the record has none."""
    toy = make_subject({"name": "s", "cls": "square", "color": "purple", "identifier": "qrv"})
    assert toy.instance_prompt == "a qrv square" and toy.class_prompt == "a square"
    assert toy.images(2, seed=0).captions == ["a qrv square"] * 2
    Image.new("RGB", (8, 8)).save(tmp_path / "0.png")
    photos = make_subject({"name": "d", "cls": "dog", "path": str(tmp_path), "description": "a dog", "identifier": "zq"})
    assert photos.images(1, seed=0, size=8).captions == ["a zq dog"]
    assert make_subject({"name": "s", "cls": "circle", "color": "green"}).instance_prompt == "a sks circle"
