"""The config tree: defaults, YAML round trip, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from radiogenomics.config import (
    Config,
    DataConfig,
    PhantomConfig,
    apply_override,
    dump_config,
    from_dict,
    load_config,
    save_config,
    to_dict,
)


def test_defaults_load():
    cfg = load_config()
    assert cfg == Config()
    assert isinstance(cfg.data, DataConfig) and isinstance(cfg.phantom, PhantomConfig)
    assert cfg.seed == 0
    assert cfg.data.spatial_dims == 2
    assert cfg.data.image_size is None
    assert cfg.data.percentiles == [0.5, 99.5]
    assert cfg.phantom.n == 256
    assert cfg.phantom.image_format == "nii.gz"


def test_empty_yaml_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config()


def test_yaml_round_trip(tmp_path):
    cfg = load_config(
        overrides=[
            "seed=7",
            "device=cpu",
            "data.spatial_dims=3",
            "data.image_size=[32, 32, 16]",
            "data.intensity=percentile",
            "data.percentiles=[1, 99]",
            "data.augment=true",
            "data.cache_rate=0.5",
            "phantom.n=10",
            "phantom.spatial_dims=3",
            "phantom.size=24",
            "phantom.frac_image_only=0.2",
            "phantom.image_format=npy",
        ]
    )
    assert cfg != Config()
    path = save_config(cfg, tmp_path / "sub" / "cfg.yaml")
    assert path == tmp_path / "sub" / "cfg.yaml"
    assert path.is_file()
    # atomic: nothing but the config file in its folder
    assert sorted(p.name for p in path.parent.iterdir()) == ["cfg.yaml"]
    again = load_config(path)
    assert again == cfg
    assert to_dict(again) == to_dict(cfg)
    # the YAML uses the dataclass field names exactly
    data = yaml.safe_load(path.read_text())
    assert set(data) == {f.name for f in dataclasses.fields(Config)}
    assert set(data["data"]) == {f.name for f in dataclasses.fields(DataConfig)}
    assert data["data"]["image_size"] == [32, 32, 16]
    assert data["data"]["percentiles"] == [1.0, 99.0]
    assert yaml.safe_load(dump_config(cfg)) == data


def test_yaml_file_with_overrides_on_top(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("seed: 3\ntrain:\n  batch_size: 4\nphantom:\n  n: 50\n")
    cfg = load_config(path, overrides=["phantom.n=20"])
    assert cfg.seed == 3
    assert cfg.train.batch_size == 4
    assert cfg.phantom.n == 20  # the override wins over the file


def test_overrides():
    cfg = load_config(overrides=["data.spatial_dims=3", "phantom.n=10"])
    assert cfg.data.spatial_dims == 3
    assert cfg.phantom.n == 10
    # everything else stays at its default
    assert cfg.data.in_channels is None  # taken from the cohort
    assert cfg.phantom.n_genes == 256
    assert cfg.seed == 0


def test_override_value_types():
    cfg = load_config(
        overrides=[
            "data.spatial_dims='3'",  # the string form of a Literal choice is accepted
            "data.image_size=[16,16,8]",
            "phantom.n=12.0",  # a whole float is an int
            "data.a_max=255",  # an int is a float
            "phantom.size=null",
        ]
    )
    assert cfg.data.spatial_dims == 3 and isinstance(cfg.data.spatial_dims, int)
    assert cfg.data.image_size == [16, 16, 8]
    assert cfg.phantom.n == 12 and isinstance(cfg.phantom.n, int)
    assert cfg.data.a_max == 255.0 and isinstance(cfg.data.a_max, float)
    assert cfg.phantom.size is None


@pytest.mark.parametrize("item", ["data.spatial_dims", "=3", "data..n=3"])
def test_malformed_override(item):
    with pytest.raises(ValueError, match="override"):
        apply_override({}, item)


@pytest.mark.parametrize(
    "override, key, suggestion",
    [
        ("data.spatial_dim=3", "data.spatial_dim", "spatial_dims"),
        ("phantom.n_gene=100", "phantom.n_gene", "n_genes"),
        ("sed=1", "sed", "seed"),
        ("dat.spatial_dims=3", "dat", "data"),
    ],
)
def test_unknown_key_names_it_and_suggests(override, key, suggestion):
    with pytest.raises(
        ValueError, match=rf"unknown key '{re.escape(key)}' \(did you mean '{suggestion}'\?\)"
    ):
        load_config(overrides=[override])


def test_unknown_key_without_close_match_lists_known_keys():
    with pytest.raises(
        ValueError, match=r"unknown key 'data\.zzzz'; known keys: spatial_dims, image_size"
    ):
        load_config(overrides=["data.zzzz=1"])


def test_unknown_nested_key_in_yaml_names_file_and_key(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("data:\n  spatial_dim: 3\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "unknown key 'data.spatial_dim'" in msg
    assert "did you mean 'spatial_dims'" in msg


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("data.spatial_dims=4", r"key 'data\.spatial_dims' must be one of 2, 3; got 4"),
        ("phantom.spatial_dims=1", r"key 'phantom\.spatial_dims' must be one of 2, 3; got 1"),
        ("phantom.n=ten", r"key 'phantom\.n' must be an integer; got 'ten'"),
        ("phantom.n=true", r"key 'phantom\.n' must be an integer; got True"),
        ("phantom.n=2.5", r"key 'phantom\.n' must be an integer; got 2\.5"),
        ("seed=abc", r"key 'seed' must be an integer"),
        ("data.a_min=low", r"key 'data\.a_min' must be a number; got 'low'"),
        ("data.augment=3", r"key 'data\.augment' must be true or false; got 3"),
        ("device=3", r"key 'device' must be a string; got 3"),
        (
            "data.intensity=zscore",
            r"key 'data\.intensity' must be one of 'minmax', 'percentile', 'fixed'",
        ),
        ("data.image_size=64", r"key 'data\.image_size' must be a list; got 64"),
        ("data.image_size=[64, x]", r"key 'data\.image_size\[1\]' must be an integer; got 'x'"),
        ("phantom.size=big", r"key 'phantom\.size' must be an integer; got 'big'"),
        ("data=5", r"config section 'data' must be a mapping; got 5"),
    ],
)
def test_bad_values_name_the_key(override, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_config(overrides=[override])


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (
            ["data.image_size=[64, 64, 64]"],
            r"key 'data\.image_size' has 3 entries \[64, 64, 64\] but data\.spatial_dims is 2",
        ),
        (
            ["data.spatial_dims=3", "data.image_size=[64, 64]"],
            r"key 'data\.image_size' has 2 entries .* data\.spatial_dims is 3",
        ),
        (["data.cache_rate=1.5"], r"key 'data\.cache_rate' must be in \[0, 1\]; got 1\.5"),
        (["data.in_channels=0"], r"key 'data\.in_channels' must be >= 1; got 0"),
        (["data.percentiles=[99, 1]"], r"key 'data\.percentiles' must be \[lower, upper\]"),
        (["data.percentiles=[1]"], r"key 'data\.percentiles' must be \[lower, upper\]"),
        (["phantom.n=0"], r"key 'phantom\.n' must be >= 1; got 0"),
        (["phantom.size=8"], r"key 'phantom\.size' must be >= 16; got 8"),
        (["phantom.n_genes=10"], r"key 'phantom\.n_genes' must be >= 128; got 10"),
        (["phantom.frac_image_only=1.0"], r"key 'phantom\.frac_image_only' must be in \[0, 1\)"),
        (
            ["phantom.frac_image_only=0.6", "phantom.frac_expression_only=0.5"],
            r"'phantom\.frac_image_only' \+ 'phantom\.frac_expression_only' must be < 1",
        ),
        (
            ["phantom.spatial_dims=3", "phantom.image_format=png"],
            r"key 'phantom\.image_format' is 'png'",
        ),
    ],
)
def test_bad_combinations_name_the_key(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_config(overrides=overrides)


def test_bad_value_in_yaml_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  spatial_dims: 4\n")
    with pytest.raises(
        ValueError, match=rf"config {path}: key 'data\.spatial_dims' must be one of 2, 3"
    ):
        load_config(path)


def test_missing_config_file_names_path(tmp_path):
    path = tmp_path / "nope" / "config.yaml"
    with pytest.raises(FileNotFoundError, match=rf"config file not found: {path}"):
        load_config(path)


def test_invalid_yaml_and_non_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ValueError, match=rf"config file {bad} is not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=rf"config file {listy} must hold a mapping"):
        load_config(listy)


def test_from_dict_builds_sections_directly():
    data = from_dict(DataConfig, {"spatial_dims": 3, "image_size": [8, 8, 8]}, prefix="data")
    assert data == DataConfig(spatial_dims=3, image_size=[8, 8, 8])
    with pytest.raises(
        ValueError, match=r"unknown key 'data\.in_chanels' \(did you mean 'in_channels'\?\)"
    ):
        from_dict(DataConfig, {"in_chanels": 3}, prefix="data")


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("gene.n_latent=8", r"key 'gene\.n_latent' was renamed to 'gene\.n_noise'"),
        ("data.channels=1", r"key 'data\.channels' was renamed to 'data\.in_channels'"),
        ("segment.val_fraction=0.2", r"renamed to 'train\.val_fraction'"),
        ("data.num_workers=2", r"key 'data\.num_workers' was removed"),
    ],
)
def test_old_key_names_say_the_new_ones(item, message):
    with pytest.raises(ValueError, match=message):
        load_config(overrides=[item])
