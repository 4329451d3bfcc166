//! Criterion benchmark of the revaluation pass on a synthetic book.
use criterion::{criterion_group, criterion_main, Criterion};
use vamargin_core::{
    revalue, Accounts, AssetParams, Book, CallTarget, ContractKind, EngineParams, Grouping,
    Haircuts, Holdings, Market, PerpetualParams, Positions, SizeTiers, TierTable,
};

fn params() -> EngineParams {
    let tiers = TierTable::new(&[
        (0.0, 0.004, 125.0),
        (50_000.0, 0.005, 100.0),
        (250_000.0, 0.01, 50.0),
    ])
    .unwrap();
    let cash = AssetParams::new(
        Haircuts::new(0.0, 0.0, 0.0).unwrap(),
        true,
        SizeTiers::default(),
    );
    let btc = AssetParams::new(
        Haircuts::new(0.6, 0.5, 0.4).unwrap(),
        true,
        SizeTiers::default(),
    );
    let linear = PerpetualParams::new(ContractKind::Linear, 0.001, 0, tiers.clone()).unwrap();
    let inverse = PerpetualParams::new(ContractKind::Inverse, 100.0, 1, tiers).unwrap();
    EngineParams::new(vec![cash, btc], vec![linear, inverse], CallTarget::Initial).unwrap()
}

fn bench_revalue(c: &mut Criterion) {
    let params = params();
    let n_accounts = 100_000usize;
    let per_account = 10usize;
    let n = n_accounts * per_account;
    let account: Vec<u32> = (0..n).map(|i| (i / per_account) as u32).collect();
    let instrument: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
    let qty: Vec<f64> = (0..n)
        .map(|i| if i % 3 == 0 { -5.0 } else { 7.0 })
        .collect();
    let entry: Vec<f64> = (0..n).map(|i| 60_000.0 + (i % 100) as f64).collect();
    let iso: Vec<f64> = (0..n)
        .map(|i| if i % 7 == 0 { 100.0 } else { f64::NAN })
        .collect();
    let h_account: Vec<u32> = (0..n_accounts as u32).collect();
    let h_asset = vec![0u32; n_accounts];
    let h_amount = vec![10_000.0; n_accounts];
    let credit = vec![f64::INFINITY; n_accounts];
    let pgroups = Grouping::build(&account, None, n_accounts, "positions.account_id").unwrap();
    let hgroups = Grouping::build(&h_account, None, n_accounts, "holdings.account_id").unwrap();
    let book = Book::new(
        &params,
        Accounts {
            credit_limit: &credit,
        },
        Holdings {
            account: &h_account,
            asset: &h_asset,
            amount: &h_amount,
        },
        Positions {
            account: &account,
            instrument: &instrument,
            qty: &qty,
            entry_price: &entry,
            isolated_margin: Some(&iso),
            leverage: None,
        },
        &hgroups,
        &pgroups,
    )
    .unwrap();
    let prices = [1.0, 61_000.0];
    let marks = [61_000.0, 61_000.0];
    let market = Market {
        asset_prices: &prices,
        marks: &marks,
    };
    c.bench_function("revalue 1M positions / 100k accounts", |b| {
        b.iter(|| revalue(&params, &book, &market).unwrap())
    });
}

criterion_group!(benches, bench_revalue);
criterion_main!(benches);
