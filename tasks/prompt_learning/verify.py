"""``bob data verify coop_fewshot`` (and the other prompt-learning suites): is each dataset where
CoOp's layout puts it, does its split file have the right shape, do the images it lists exist
(and decode, with ``--open-images``). The same readers as a cell's, so a problem shown here is the
error a cell would raise."""
from __future__ import annotations

from harness.errors import BobError

PREPARE_NOTES = """The CoOp protocol's eleven datasets, laid out as CoOp's DATASETS.md (KaiyangZhou/CoOp) describes, under <root>:
  caltech-101/101_ObjectCategories/  + split_zhou_Caltech101.json      oxford_pets/images/ + split_zhou_OxfordPets.json
  stanford_cars/{cars_train,cars_test}/ + split_zhou_StanfordCars.json oxford_flowers/jpg/ + split_zhou_OxfordFlowers.json
  food-101/images/ + split_zhou_Food101.json                           fgvc_aircraft/images/ + variants.txt, images_variant_{train,val,test}.txt
  sun397/SUN397/ + split_zhou_SUN397.json                              dtd/images/ + split_zhou_DescribableTextures.json
  eurosat/2750/ + split_zhou_EuroSAT.json                              ucf101/UCF-101-midframes/ + split_zhou_UCF101.json
  imagenet/images/{train,val}/<wnid>/ + imagenet/classnames.txt
How to get them: each dataset from its official page, the split_zhou_*.json files from the links in CoOp's DATASETS.md
(FGVC-Aircraft's lists come with fgvc-aircraft-2013b; ImageNet's classnames.txt is linked there too).
Then: bob data verify coop_fewshot --root <root>"""


def check_coop_data(task_id: str, data_root: str | None, override: str | None = None, open_images: bool = False):
    """The data check of one ``coop:`` task (every dataset it reads)."""
    from harness.data import open_rgb, Sample

    from ..suites import TaskCheck
    from .datasets import dataset_folder, dataset_spec, read_dataset
    from .task import cross_targets, parse_coop_id

    dataset, _, protocol = parse_coop_id(task_id)
    if protocol == "dg":
        from .dg import check_dg_data

        return check_dg_data(task_id, data_root, override, open_images)
    names = [dataset] + (cross_targets(dataset) if protocol == "cross" else [])
    check = TaskCheck(task_id, None, fix="lay the data out as `bob data prepare coop_fewshot` shows (CoOp's DATASETS.md), then rerun")
    locations = []
    for name in names:
        spec = dataset_spec(name)
        try:
            folder = dataset_folder(spec, data_root, override if name == dataset else None)
            locations.append(str(folder))
            data = read_dataset(spec, folder)
        except BobError as exc:
            check.problems.append(str(exc))
            continue
        for split, items in data.splits.items():
            check.counts[f"{name}:{split}" if len(names) > 1 else split] = len(items)
            missing = [i.path for i in items if not (data.image_root / i.path).is_file()]
            if missing:
                check.problems.append(f"{name}: {len(missing)} image(s) of its {split} split are missing, e.g. {data.image_root / missing[0]}")
            elif open_images:
                for item in items:
                    try:
                        open_rgb(Sample(data.image_root / item.path, item.label, data.source))
                    except BobError as exc:
                        check.problems.append(str(exc))
                        break
    check.location = ", ".join(locations) if locations and not any("does not exist" in p for p in check.problems) else None
    return check
