//! Indexing, splits, decoding and the task samplers on the real Omniglot data
//! (extracted once from the mirror into target/test-data).

mod common;

use siamese_data::index::{AlphabetSelection, DatasetIndex};
use siamese_data::lake::load_runs;
use siamese_data::sample::koch_tasks;
use siamese_data::{OmniglotSet, Part, SplitName, seeded_rng};

#[test]
fn sets_have_the_published_sizes() {
    let root = common::extracted_dataset();
    for (set, alphabets, characters) in [
        (OmniglotSet::Background, 30, 964),
        (OmniglotSet::Evaluation, 20, 659),
        (OmniglotSet::BackgroundSmall1, 5, 136),
        (OmniglotSet::BackgroundSmall2, 5, 156),
    ] {
        let idx = DatasetIndex::scan(&root.join(set.folder())).unwrap();
        let counts = idx.counts();
        assert_eq!(counts.alphabets, alphabets, "{set}");
        assert_eq!(counts.characters, characters, "{set}");
        assert_eq!(counts.images, set.file_count(), "{set}");
        assert_eq!(idx.drawers(), (1..=20).collect::<Vec<u8>>(), "{set}");
    }
}

#[test]
fn koch_split_holds_out_alphabets_and_drawers() {
    let root = common::extracted_dataset();
    let train = SplitName::Koch.index(Part::Train, &root).unwrap();
    assert_eq!(train.counts().images, 964 * 12);
    assert_eq!(train.drawers(), (1..=12).collect::<Vec<u8>>());
    let all = SplitName::KochAllDrawers.index(Part::Train, &root).unwrap();
    assert_eq!(all.counts().images, 19_280);

    let val = SplitName::Koch.index(Part::Validation, &root).unwrap();
    let test = SplitName::Koch.index(Part::Test, &root).unwrap();
    let names = |idx: &DatasetIndex| -> Vec<String> {
        idx.alphabets().iter().map(|a| a.name.clone()).collect()
    };
    assert_eq!(
        names(&val),
        [
            "Angelic",
            "Atemayar_Qelisayer",
            "Atlantean",
            "Aurek-Besh",
            "Avesta",
            "Ge_ez",
            "Glagolitic",
            "Gurmukhi",
            "Kannada",
            "Keble"
        ]
    );
    assert_eq!(names(&test)[0], "Malayalam");
    assert_eq!(names(&test).len(), 10);
    assert_eq!(val.drawers(), vec![13, 14, 15, 16]);
    assert_eq!(test.drawers(), vec![17, 18, 19, 20]);
    assert_eq!(
        val.counts().characters + test.counts().characters,
        659,
        "every evaluation character is in exactly one of validation and test"
    );
    let small = SplitName::BackgroundSmall1
        .index(Part::Train, &root)
        .unwrap();
    assert_eq!(small.counts().images, 2_720);
}

#[test]
fn decoding_follows_the_ink_convention() {
    let root = common::extracted_dataset();
    let braille = DatasetIndex::scan(&root.join("images_background"))
        .unwrap()
        .select(&AlphabetSelection::Named(vec!["Braille".into()]), 1..=20)
        .unwrap();
    let data = braille.load().unwrap();
    let mut ink = 0usize;
    let mut total = 0usize;
    for img in data.images() {
        assert_eq!((img.width(), img.height()), (105, 105));
        // Omniglot's PNGs are 1-bit: kept a bit per pixel.
        assert!(img.is_binary());
        let pixels = img.pixels();
        assert!(pixels.iter().all(|&p| p == 0 || p == 255));
        ink += pixels.iter().filter(|&&p| p == 255).count();
        total += pixels.len();
    }
    // Strokes are a small minority of the pixels; the inverse convention would give > 90%.
    let fraction = ink as f64 / total as f64;
    assert!(
        fraction > 0.005 && fraction < 0.2,
        "ink fraction {fraction}"
    );

    // The one pixel-identical pair of the background set decodes identically.
    let find = |name: &str| {
        data.index()
            .images()
            .iter()
            .position(|e| e.path.ends_with(format!("character01/{name}")))
            .unwrap()
    };
    let (a, b) = (find("0192_03.png"), find("0192_19.png"));
    assert_eq!(data.image(a), data.image(b));
    assert_ne!(data.image(a), data.image(find("0192_04.png")));
}

#[test]
fn a_bad_image_is_an_error_naming_it() {
    let root = common::extracted_dataset();
    let tmp = tempfile::tempdir().unwrap();
    let char_dir = tmp.path().join("Alpha").join("character01");
    std::fs::create_dir_all(&char_dir).unwrap();
    let src = root.join("images_background/Braille/character01/0192_01.png");
    std::fs::copy(&src, char_dir.join("0192_01.png")).unwrap();
    std::fs::write(char_dir.join("0192_02.png"), b"\x89PNG truncated").unwrap();
    let idx = DatasetIndex::scan(tmp.path()).unwrap();
    assert_eq!(idx.counts().images, 2);
    let err = idx.load().unwrap_err().to_string();
    assert!(err.contains("0192_02.png"), "{err}");

    std::fs::write(char_dir.join("notes.png"), b"x").unwrap();
    let err = DatasetIndex::scan(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("notes.png") && err.contains("NNNN_DD"),
        "{err}"
    );

    let err = DatasetIndex::scan(&tmp.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn lake_runs_load_with_their_answers() {
    let root = common::extracted_dataset();
    let runs = load_runs(&root.join("all_runs")).unwrap();
    assert_eq!(runs.len(), 20);
    for run in &runs {
        assert_eq!(run.training.len(), 20);
        assert_eq!(run.test.len(), 20);
        let mut answers = run.answers.clone();
        answers.sort_unstable();
        assert_eq!(answers, (0..20).collect::<Vec<_>>(), "{}", run.name);
    }
    // run01/class_labels.txt begins: item01 → class08, item02 → class09.
    assert_eq!(runs[0].answers[0], 7);
    assert_eq!(runs[0].answers[1], 8);
    let err = load_runs(&root.join("images_background"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("run"), "{err}");
}

#[test]
fn koch_test_construction_has_400_trials() {
    let root = common::extracted_dataset();
    let test = SplitName::Koch.index(Part::Test, &root).unwrap();
    let tasks = koch_tasks(&test, 20, 400, &mut seeded_rng(0)).unwrap();
    assert_eq!(tasks.len(), 400);
    let val = SplitName::Koch.index(Part::Validation, &root).unwrap();
    let tasks = koch_tasks(&val, 20, 320, &mut seeded_rng(0)).unwrap();
    assert_eq!(tasks.len(), 320);
    for t in &tasks {
        assert_eq!(val.images()[t.query].character, t.characters[t.answer]);
    }
}
