"""The architecture figure: valid SVG, shapes computed from the configuration, the shipped copy current."""
from pathlib import Path
from xml.etree import ElementTree

from convmixer.book.figures import ArchitectureFigure, architecture_svg, main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "book" / "figures" / "convmixer_architecture.svg"


def texts(svg: str) -> list[str]:
    root = ElementTree.fromstring(svg)
    return [el.text for el in root.iter("{http://www.w3.org/2000/svg}text")]


def test_cifar_shapes_are_on_the_figure():
    labels = texts(architecture_svg())
    for shape in ("N×3×32×32", "N×256×16×16", "N×256", "N×10"):
        assert shape in " ".join(labels), shape
    assert "× d = 8" in labels
    assert "5×5, groups = 256" in labels


def test_shapes_follow_the_configuration():
    labels = " ".join(texts(architecture_svg(dim=768, depth=32, kernel_size=7, patch_size=7, n_classes=1000,
                                             image_size=224, activation="ReLU")))
    assert "N×768×32×32" in labels and "N×1000" in labels and "× d = 32" in labels and "ReLU" in labels


def test_no_background_and_no_theme_dependent_colour():
    svg = architecture_svg()
    root = ElementTree.fromstring(svg)
    assert root.get("style") is None                      # transparent: the page's background shows
    assert "black" not in svg and "#000" not in svg and "white" not in svg


def test_notebook_repr_is_the_svg():
    assert ArchitectureFigure()._repr_svg_() == architecture_svg()


def test_shipped_copy_is_current(tmp_path):
    out = tmp_path / "figure.svg"
    main([str(out)])
    assert out.read_text(encoding="utf-8") == SHIPPED.read_text(encoding="utf-8"), (
        "book/figures/convmixer_architecture.svg is stale: run python -m convmixer.book.figures "
        "book/figures/convmixer_architecture.svg")
