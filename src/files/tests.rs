//! The store on a real directory: whole files only, the quota, eviction, expiry and recovery.

use super::*;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smolchat-files-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn open(dir: &Path, quota: u64) -> Arc<Files> {
    Arc::new(Files::open(dir, 1000, Some(quota), None).unwrap())
}

fn kind() -> Kind {
    Kind {
        mime: "application/octet-stream".into(),
        width: None,
        height: None,
    }
}

async fn put(files: &Arc<Files>, bytes: &[u8]) -> Result<Stored, FileError> {
    let mut upload = files.begin("lobby", "f.bin", bytes.len() as u64).await?;
    for chunk in bytes.chunks(7) {
        upload.write(chunk).await?;
    }
    upload.finish(kind()).await
}

/// Names in the files directory other than the index.
fn on_disk(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != index::INDEX)
        .collect();
    names.sort();
    names
}

#[test]
fn a_whole_upload_is_stored_under_its_id() {
    let dir = temp("whole");
    let files = open(&dir, 10_000);
    let stored = smol::block_on(put(&files, b"hello, file")).unwrap();
    assert!(valid_id(&stored.id));
    assert_eq!(fs::read(files.path(&stored.id)).unwrap(), b"hello, file");
    assert_eq!(files.get(&stored.id), Some(stored.clone()));
    assert_eq!(files.usage(), (1, 11));
    assert_eq!(on_disk(&dir), std::slice::from_ref(&stored.id));
    // And it is still there for the next start.
    drop(files);
    let files = open(&dir, 10_000);
    assert_eq!(files.get(&stored.id), Some(stored));
}

#[test]
fn short_long_and_abandoned_uploads_leave_nothing() {
    let dir = temp("short");
    let files = open(&dir, 10_000);
    smol::block_on(async {
        let mut upload = files.begin("lobby", "x", 5).await.unwrap();
        upload.write(b"abc").await.unwrap();
        assert!(matches!(
            upload.finish(kind()).await,
            Err(FileError::Length {
                expected: 5,
                got: 3
            })
        ));
        let mut upload = files.begin("lobby", "x", 2).await.unwrap();
        assert!(upload.write(b"abc").await.is_err());
        drop(upload);
        let mut upload = files.begin("lobby", "x", 3).await.unwrap();
        upload.write(b"ab").await.unwrap();
        assert_eq!(
            on_disk(&dir).len(),
            1,
            "the partial file exists while uploading"
        );
        drop(upload);
    });
    assert!(on_disk(&dir).is_empty());
    assert_eq!(files.usage(), (0, 0));
    assert_eq!(files.inner.lock().unwrap().reserved, 0);
}

#[test]
fn the_oldest_files_make_room_and_what_cannot_fit_is_refused() {
    let dir = temp("quota");
    let files = open(&dir, 1000);
    smol::block_on(async {
        let first = put(&files, &[1; 400]).await.unwrap();
        let second = put(&files, &[2; 400]).await.unwrap();
        let third = put(&files, &[3; 400]).await.unwrap();
        assert_eq!(files.get(&first.id), None, "the oldest goes first");
        assert!(files.get(&second.id).is_some() && files.get(&third.id).is_some());
        assert_eq!(files.usage(), (2, 800));
        assert_eq!(on_disk(&dir), {
            let mut ids = vec![second.id.clone(), third.id.clone()];
            ids.sort();
            ids
        });
        // Over the single-file limit, before any space is touched.
        assert!(matches!(
            files.begin("lobby", "x", 1001).await,
            Err(FileError::TooLarge { limit: 1000 })
        ));
        // Two uploads under way may not promise more than the quota between them.
        let held = files.begin("lobby", "x", 700).await.unwrap();
        assert!(matches!(
            files.begin("lobby", "y", 400).await,
            Err(FileError::NoSpace(_))
        ));
        // Making room for 700 took both older files.
        assert_eq!(files.usage(), (0, 0));
        drop(held);
        put(&files, &[4; 600]).await.unwrap();
    });
    let (_, used) = files.usage();
    assert!(used <= 1000);
}

#[test]
fn a_restart_removes_orphans_and_entries_without_bytes() {
    let dir = temp("orphans");
    let files = open(&dir, 10_000);
    let (kept, lost) = smol::block_on(async {
        (
            put(&files, b"kept").await.unwrap(),
            put(&files, b"lost").await.unwrap(),
        )
    });
    drop(files);
    let folder = dir.join("files");
    fs::remove_file(folder.join(&lost.id)).unwrap();
    fs::write(
        folder.join(format!("{}.part", "a".repeat(32))),
        b"cut short",
    )
    .unwrap();
    fs::write(folder.join("b".repeat(32)), b"never listed").unwrap();
    fs::write(folder.join("index.json.tmp"), b"[{half").unwrap();
    fs::write(folder.join("README"), b"not ours: left alone").unwrap();

    let files = open(&dir, 10_000);
    assert_eq!(files.usage(), (1, 4));
    assert_eq!(files.get(&kept.id).map(|f| f.size), Some(4));
    let mut expected = vec!["README".to_string(), kept.id.clone()];
    expected.sort();
    assert_eq!(on_disk(&dir), expected);
}

#[test]
fn a_damaged_index_stops_the_start_with_a_reason() {
    let dir = temp("damaged");
    fs::create_dir_all(dir.join("files")).unwrap();
    fs::write(dir.join("files/index.json"), b"{not json").unwrap();
    let error = Files::open(&dir, 1000, Some(1000), None)
        .err()
        .expect("refused");
    assert!(error.to_string().contains("damaged"), "{error}");
}

#[test]
fn old_files_expire_and_removal_is_a_hook() {
    let dir = temp("expire");
    let files =
        Arc::new(Files::open(&dir, 1000, Some(10_000), Some(Duration::from_secs(86_400))).unwrap());
    let (a, b) = smol::block_on(async {
        (
            put(&files, b"aaa").await.unwrap(),
            put(&files, b"bbb").await.unwrap(),
        )
    });
    assert_eq!(files.expire_blocking(SystemTime::now()).unwrap(), 0);
    assert!(files.remove(&a.id).unwrap());
    assert!(!files.remove(&a.id).unwrap());
    let later = SystemTime::now() + Duration::from_secs(2 * 86_400);
    assert_eq!(files.expire_blocking(later).unwrap(), 1);
    assert_eq!(files.get(&b.id), None);
    assert_eq!(files.usage(), (0, 0));
    assert!(on_disk(&dir).is_empty());
}

#[test]
fn the_default_quota_is_a_share_of_the_free_space() {
    let dir = temp("free");
    let files = Files::open(&dir, 1000, None, None).unwrap();
    // Measured again now: other writers may have used some since.
    let free = free_bytes(&dir).unwrap();
    let quota = files.limits().quota;
    assert!(quota > 0 && quota < free, "{quota} of {free}");
}
