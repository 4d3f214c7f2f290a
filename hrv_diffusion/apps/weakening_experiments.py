"""The paper's ordered-weakening experiments as data: item lists, prompt templates, and the CLIP text of a prompt.

A template has '!' for an item of ``item1`` and, with two lists, '@' for an item of ``item2``; the prompts nest
item1 outer, item2 inner (as the reference's ``hp_construct_prompts.ipynb``)::

    >>> build_prompts(experiment(5))[:2]
    ['a cubist style painting of a castle', 'a cubist style painting of a mountain']

Each experiment also names ``text_items``: the list of the concept's own items. The CLIP text of a prompt is the
first of them found in the prompt (``clip_text_for``), e.g. ``cubist`` for the prompt above.

Numbers: 1-9 the in-distribution experiments, 91-95 the out-of-distribution variants (new items, same template and
concept), 991 an extended concept (Tableware) that is not one of the 34 HRV concepts: it needs a custom HRV.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hrv_diffusion.errors import UserError

# ------------------------------------------------------------------------------------------------ item lists
# As in the reference notebooks, in their order (the order decides prompt order and substring matching).

Color = ["red", "blue", "green", "yellow", "black", "white", "purple", "gray", "pink", "brown"]
Animals = ["cat", "dog", "rabbit", "frog", "bird", "squirrel", "deer", "lion", "penguin", "horse"]
Fruits_and_Vegetables = ["lemons", "bananas", "apples", "oranges", "blueberries", "carrots", "broccoli", "tomatoes",
                         "potatoes", "grapes"]
Image_Style = ["cubist", "pop art", "steampunk", "impressionist", "black-and-white", "watercolor", "cartoon",
               "minimalist", "sepia", "sketch"]
Material = ["glass", "copper", "marble", "jade", "gold", "basalt", "silver", "clay", "paper", "leather"]
Nature_Scenes = ["forest", "desert", "beach", "waterfall", "mountain", "canyon", "glacier", "coral reef", "jungle",
                 "lake"]
Weather = ["snowy", "rainy", "foggy", "stormy"]  # the reference's Weather_Conditions
Geometric_Patterns = ["polka-dot", "leopard", "stripe", "greek-key", "plaid"]
Furniture = ["bed", "table", "chair", "sofa", "recliner", "bookshelf", "dresser", "wardrobe", "coffee table",
             "TV stand"]
# 'ballon' (sic) is the published spelling: it is kept so that the prompts and folder names match the paper's.
Objects_A = ["car", "bench", "bowl", "ballon", "ball"]
Objects_B = ["bowl", "cup", "table", "ball", "teapot"]
Objects_C = ["T-shirt", "pillow", "wallpaper", "umbrella", "blanket"]
Animals_A = ["cat", "dog", "rabbit", "frog", "bird"]
Others = ["castle", "mountain", "cityscape", "farmland", "forest"]

Animals_ood = ["rabbit", "frog", "sheep", "pig", "chicken", "dolphin", "goat", "duck", "deer", "fox"]
Color_ood = ["coral", "beige", "violet", "cyan", "magenta", "indigo", "orange", "turquoise", "teal", "khaki"]
Material_ood = ["copper", "marble", "jade", "gold", "basalt", "silver", "clay", "steel", "tin", "bronze"]
Fruits_and_Vegetables_ood = ["lemons", "blueberries", "onions", "raspberries", "pineapples", "cherries", "cucumbers",
                             "bell peppers", "cauliflowers", "mangoes"]
Nature_Scenes_ood = ["glacier", "coral reef", "swamp", "pond", "fjord", "rainforest", "grassland", "marsh", "creek",
                     "island"]
# Extended concept (exp 991). The reference's scoring notebook split this list on "," instead of ", ", so its CLIP
# texts after the first had a leading space; ours do not.
Tableware = ["salad bowl", "serving platter", "bread basket", "fondue pot", "spoon", "fork", "nut dish", "coffee pot",
             "tureen", "chafing dish"]

ITEM_LISTS: dict[str, list[str]] = {
    "Color": Color, "Animals": Animals, "Fruits_and_Vegetables": Fruits_and_Vegetables, "Image_Style": Image_Style,
    "Material": Material, "Nature_Scenes": Nature_Scenes, "Weather": Weather,
    "Geometric_Patterns": Geometric_Patterns, "Furniture": Furniture, "Objects_A": Objects_A,
    "Objects_B": Objects_B, "Objects_C": Objects_C, "Animals_A": Animals_A, "Others": Others,
    "Animals_ood": Animals_ood, "Color_ood": Color_ood, "Material_ood": Material_ood,
    "Fruits_and_Vegetables_ood": Fruits_and_Vegetables_ood, "Nature_Scenes_ood": Nature_Scenes_ood,
    "Tableware": Tableware,
}


# ------------------------------------------------------------------------------------------------ experiments

@dataclass(frozen=True)
class Experiment:
    """One ordered-weakening experiment.

    ``concept`` is the HRV concept whose heads are weakened (a name of the concept set, e.g. "Image Style");
    ``template`` has '!' (item1) and, when ``item2`` is given, '@' (item2); ``text_items`` is the concept's own
    item list, whose items are the CLIP texts. Left empty it defaults to ``item2`` when there are two lists, else
    ``item1``; the paper's experiments below name it explicitly (exps 1, 5 and 92 use item1 with two lists).
    """

    number: int
    concept: str
    template: str
    item1: tuple[str, ...]
    item2: tuple[str, ...] | None = None
    text_items: tuple[str, ...] = field(default=())

    def __post_init__(self):
        object.__setattr__(self, "item1", tuple(self.item1))
        if self.item2 is not None:
            object.__setattr__(self, "item2", tuple(self.item2))
        if not self.text_items:
            object.__setattr__(self, "text_items", self.item2 if self.item2 is not None else self.item1)
        object.__setattr__(self, "text_items", tuple(self.text_items))
        if "!" not in self.template:
            raise ValueError(f"exp {self.number}: template {self.template!r} has no '!' for item1")
        if (self.item2 is not None) != ("@" in self.template):
            raise ValueError(f"exp {self.number}: template {self.template!r} and item2 do not agree "
                             "('@' is needed exactly when there is a second item list)")

    @property
    def num_prompts(self) -> int:
        return len(self.item1) * (len(self.item2) if self.item2 is not None else 1)

    @property
    def folder(self) -> str:
        """The experiment's folder under the output path: ``exp_{number}``."""
        return f"exp_{self.number}"


def _exp(number, concept, template, item1, item2=None, text_items=None) -> Experiment:
    return Experiment(number, concept, template, item1, item2, text_items or ())


EXPERIMENTS: dict[int, Experiment] = {e.number: e for e in [
    _exp(1, "Color", "a ! @", Color, Objects_A, text_items=Color),
    _exp(2, "Weather Conditions", "a ! on a @ day", Animals_A, Weather, text_items=Weather),
    _exp(3, "Animals", "photo of a !", Animals, text_items=Animals),
    _exp(4, "Material", "a ! made of @", Objects_B, Material, text_items=Material),
    _exp(5, "Image Style", "a ! style painting of a @", Image_Style, Others, text_items=Image_Style),
    _exp(6, "Geometric Patterns", "a ! with a @ pattern", Objects_C, Geometric_Patterns, text_items=Geometric_Patterns),
    _exp(7, "Nature Scenes", "photo of a !", Nature_Scenes, text_items=Nature_Scenes),
    _exp(8, "Fruits and Vegetables", "photo of !", Fruits_and_Vegetables, text_items=Fruits_and_Vegetables),
    _exp(9, "Furniture", "photo of a !", Furniture, text_items=Furniture),
    # out-of-distribution items, same concepts and templates
    _exp(91, "Animals", "photo of a !", Animals_ood, text_items=Animals_ood),
    _exp(92, "Color", "a ! @", Color_ood, Objects_A, text_items=Color_ood),
    _exp(93, "Material", "a ! made of @", Objects_B, Material_ood, text_items=Material_ood),
    _exp(94, "Fruits and Vegetables", "photo of !", Fruits_and_Vegetables_ood, text_items=Fruits_and_Vegetables_ood),
    _exp(95, "Nature Scenes", "photo of a !", Nature_Scenes_ood, text_items=Nature_Scenes_ood),
    # extended concept: not among the 34 HRV concepts, needs an HRV built with a concept set that has it
    _exp(991, "Tableware", "photo of a !", Tableware, text_items=Tableware),
]}


class UnknownExperimentError(KeyError, UserError):
    """No experiment has that number (a KeyError and a ValueError, so either ``except`` catches it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def experiment(number: int | str) -> Experiment:
    """The experiment ``number`` (1-9, 91-95, 991); ``UnknownExperimentError`` (a KeyError and a ValueError) naming
    the valid numbers otherwise."""
    try:
        return EXPERIMENTS[int(number)]
    except (KeyError, ValueError):
        valid = ", ".join(str(n) for n in EXPERIMENTS)
        raise UnknownExperimentError(f"no experiment {number!r}; the experiments are {valid}") from None


def build_prompts(exp: Experiment) -> list[str]:
    """The experiment's prompts: '!' <- item1 (outer loop), '@' <- item2 (inner loop)."""
    if exp.item2 is None:
        return [exp.template.replace("!", a) for a in exp.item1]
    return [exp.template.replace("!", a).replace("@", b) for a in exp.item1 for b in exp.item2]


def clip_text_for(prompt_folder: str, exp: Experiment) -> str:
    """The CLIP text of a prompt folder: the first item of ``exp.text_items`` that is a substring of the name.

    As in the reference, the first match in list order wins, not the longest: in exp 9 "photo of a coffee table"
    gives "table" (listed before "coffee table"). When no item matches, the reference silently reused the text of
    the previous folder; we raise ``ValueError`` instead.
    """
    for item in exp.text_items:
        if item in prompt_folder:
            return item
    raise ValueError(f"prompt folder {prompt_folder!r} contains none of the {exp.concept} items of exp {exp.number} "
                     f"({', '.join(exp.text_items)}): it does not belong to this experiment")
