//! The smallest chat client: joins as USER with a few solid-colour frames, one per
//! request, and prints the shape of every mosaic the moment it arrives.
//!
//! ```sh
//! cargo run -p vchat-example-clients --bin mosaic_client -- grpc://127.0.0.1:12345 alice 30
//! ```

use bytes::Bytes;
use vchat_client::{Client, PostOptions};
use vchat_core::{Document, Tensor};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(user)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: mosaic_client grpc://HOST:PORT USER [FRAMES]");
    };
    let frames: usize = args.next().map_or(Ok(30), |n| n.parse())?;

    // Any stream of Documents will do: a webcam, a file, or this.
    let inputs = futures::stream::iter((0..frames).map(move |i| {
        let shade = (i * 8 % 256) as u8;
        let pixels = Bytes::from(vec![shade; 200 * 300 * 3]);
        let mut doc = Document::with_tensor(Tensor::image(200, 300, 3, pixels).expect("200x300x3"));
        doc.set_tag_str("user", user.clone());
        doc
    }));

    let options = PostOptions::new()
        .request_size(1)
        .on_done(|resp| {
            let docs = resp.docs().expect("valid response");
            let shape = docs[0].tensor().map(|t| t.shape().to_vec());
            println!(
                "mosaic {shape:?} in {:?}",
                resp.latency().unwrap_or_default()
            );
        })
        .on_error(|resp| eprintln!("error: {}", resp.error().unwrap_or("?")));
    let summary = Client::new(&addr)?.post("/", inputs, options).await?;
    println!("{} responses, {} errors", summary.requests, summary.errors);
    Ok(())
}
