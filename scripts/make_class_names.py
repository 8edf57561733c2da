"""Write tasks/configs/zeroshot.yaml: class names and prompt templates for zero-shot classification.

Why a generator: the names must be in the *label order of the data bob reads* (VTAB-1k lists use
the TFDS label ids; VPT's FGVC json uses the official class ids, sorted), so they are taken from
the packages that define those orders rather than typed in. Run it on a machine with PyPI access:

    pip download --no-deps -d /tmp/w tensorflow-datasets clip_benchmark
    python scripts/make_class_names.py /tmp/w/tensorflow_datasets-*.whl /tmp/w/clip_benchmark-*.whl

Sources: TFDS label files / ClassLabel lists (caltech101, sun397, dtd, eurosat, resisc45,
oxford_iiit_pet, oxford_flowers102, cars196), CLIP_benchmark's English class names (readable
names for eurosat, flowers, pets, svhn, pcam, diabetic retinopathy, clevr, dmlab, kitti; same
order as TFDS) and its templates (OpenAI CLIP's per-dataset prompts). CIFAR-100's fine labels
are alphabetical (its meta file), listed here. The structured tasks' names describe their bins.
CUB-200, NABirds and Stanford Dogs are read from the dataset's own files at run time (their
class folders / classes.txt), so they are declared, not listed.
"""
from __future__ import annotations

import ast
import json
import sys
import zipfile
from pathlib import Path

import yaml

CIFAR100 = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle
caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox
girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road
rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank
telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()


def _list_literal(source: str, name: str) -> list[str]:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise KeyError(name)


def main(tfds_wheel: str, cb_wheel: str, out: str = "tasks/configs/zeroshot.yaml") -> None:
    tf = zipfile.ZipFile(tfds_wheel)
    cb = zipfile.ZipFile(cb_wheel)
    read = lambda z, p: z.read(p).decode("utf-8")  # noqa: E731
    ic = "tensorflow_datasets/image_classification/"
    ds = "tensorflow_datasets/datasets/"
    en = json.loads(read(cb, "clip_benchmark/datasets/en_classnames.json"))
    tpl = json.loads(read(cb, "clip_benchmark/datasets/en_zeroshot_classification_templates.json"))
    human = lambda names: [n.replace("_", " ") for n in names]  # noqa: E731

    assert len(CIFAR100) == 100 and CIFAR100 == sorted(CIFAR100)
    sun = [line.strip()[3:].replace("_", " ").replace("/", " ") for line in read(tf, ic + "sun397_labels.txt").splitlines() if line.strip()]
    tasks = {
        "vtab1k/cifar100": (human(CIFAR100), tpl["cifar100"], "CIFAR-100 meta (fine labels, alphabetical)"),
        "vtab1k/caltech101": (en["caltech101_vtab"], tpl["caltech101"], "CLIP_benchmark caltech101_vtab (TFDS order)"),
        "vtab1k/dtd": (human(read(tf, ic + "dtd_key_attributes.txt").split()), tpl["dtd"], "TFDS dtd_key_attributes.txt"),
        "vtab1k/oxford_flowers102": (en["flowers"], tpl["flowers"], "CLIP_benchmark flowers (TFDS order)"),
        "vtab1k/oxford_iiit_pet": (en["pets"], tpl["pets"], "CLIP_benchmark pets (TFDS order)"),
        "vtab1k/svhn": (en["svhn"], tpl["svhn"], "CLIP_benchmark svhn"),
        "vtab1k/sun397": (sun, tpl["sun397"], "TFDS sun397_labels.txt"),
        "vtab1k/patch_camelyon": (en["pcam"], tpl["pcam"], "CLIP_benchmark pcam"),
        "vtab1k/eurosat": (en["eurosat"], tpl["eurosat"], "CLIP_benchmark eurosat (TFDS order)"),
        "vtab1k/resisc45": (human(_list_literal(read(tf, ds + "resisc45/resisc45_dataset_builder.py"), "_LABELS")), tpl["resisc45"], "TFDS resisc45 _LABELS"),
        "vtab1k/diabetic_retinopathy": (en["diabetic_retinopathy"], tpl["diabetic_retinopathy"], "CLIP_benchmark diabetic_retinopathy"),
        "vtab1k/clevr_count": (en["clevr_count_all"], tpl["clevr_count_all"], "CLIP_benchmark clevr_count_all (count - 3)"),
        "vtab1k/clevr_distance": (en["clevr_closest_object_distance"], tpl["clevr_closest_object_distance"], "CLIP_benchmark clevr_closest_object_distance"),
        "vtab1k/dmlab": (en["dmlab"], tpl["dmlab"], "CLIP_benchmark dmlab"),
        "vtab1k/kitti_distance": (en["kitti_closest_vehicle_distance"], tpl["kitti_closest_vehicle_distance"], "CLIP_benchmark kitti_closest_vehicle_distance"),
        "vtab1k/dsprites_location": ([f"{round(100 * (i + 0.5) / 16)}" for i in range(16)], tpl["dsprites_label_x_position"], "16 x-position bins (bin centre in %)"),
        "vtab1k/dsprites_orientation": ([f"{22.5 * i:g} degrees" for i in range(16)], tpl["dsprites_label_orientation"], "16 orientation bins of 22.5 degrees"),
        "vtab1k/smallnorb_azimuth": ([f"{20 * i} degrees" for i in range(18)], tpl["smallnorb_label_azimuth"], "18 azimuths, 20 degrees apart"),
        "vtab1k/smallnorb_elevation": ([f"{30 + 5 * i} degrees" for i in range(9)], tpl["smallnorb_label_elevation"], "9 elevations, 30-70 degrees"),
        "fgvc/oxford_flowers": (en["flowers"], tpl["flowers"], "CLIP_benchmark flowers (official label order)"),
        "fgvc/stanford_cars": (_list_literal(read(tf, ic + "cars196.py"), "_NAMES"), tpl["cars"], "TFDS cars196 _NAMES (devkit order)"),
    }
    rows = ("top", "upper middle", "lower middle", "bottom")
    cols = ("left", "centre-left", "centre-right", "right")
    tasks.update({
        "digits": (en["mnist"], tpl["mnist"], "CLIP_benchmark mnist"),
        "shapes/location": ([f"{r} {c}" for r in rows for c in cols], ["a white shape in the {c} of a black image.", "a shape at the {c}."],
                            "bob: 4 x 4 grid cells, row-major"),
        "shapes/orientation": ([f"{22.5 * i + 11.25:g} degrees" for i in range(16)], ["a white arrow rotated by {c}.", "a shape rotated at {c}."],
                               "bob: 16 orientation bins (bin centre)"),
    })
    declared = {  # names read from the dataset's own files (see tasks/class_names.py)
        "fgvc/cub200": ({"kind": "image_folder", "strip": r"^\d+\."}, ["a photo of a {c}, a type of bird."], "CUB class folders (001.Black_footed_Albatross)"),
        "fgvc/nabirds": ({"kind": "classes_file", "file": "classes.txt"}, ["a photo of a {c}, a type of bird."], "NABirds classes.txt (id name)"),
        "fgvc/stanford_dogs": ({"kind": "image_folder", "strip": r"^n\d+-"}, ["a photo of a {c}, a type of dog."], "Stanford Dogs class folders (n02085620-Chihuahua)"),
    }
    doc = {"tasks": {}}
    for task, (names, templates, source) in tasks.items():
        doc["tasks"][task] = {"source": source, "templates": list(templates), "names": list(names)}
    for task, (names_from, templates, source) in declared.items():
        doc["tasks"][task] = {"source": source, "templates": templates, "names_from": names_from}
    assert len(doc["tasks"]["vtab1k/resisc45"]["names"]) == 45 and len(sun) == 397 and len(doc["tasks"]["fgvc/stanford_cars"]["names"]) == 196
    header = "# Generated by scripts/make_class_names.py: class names (in label order) and prompt templates for `zeroshot`.\n"
    Path(out).write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=200), encoding="utf-8")
    print(f"wrote {out}: {len(doc['tasks'])} tasks")


if __name__ == "__main__":
    main(*sys.argv[1:])
