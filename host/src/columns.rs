//! Reading a stored row by column position, whatever the database: the
//! task store and the audit trail map their rows to records once, for
//! SQLite and PostgreSQL alike.

/// A row of a query result, read by position.
pub trait Columns {
    /// The database's own error, which a bad value becomes too.
    type Error;

    fn text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    fn int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    fn real(&self, i: usize) -> Result<f64, Self::Error>;
    fn flag(&self, i: usize) -> Result<bool, Self::Error>;
    /// Column `i` holds a value the reader refuses (`what` it should be).
    fn corrupt(&self, i: usize, what: &str) -> Self::Error;

    /// A column that is never NULL.
    fn required_text(&self, i: usize) -> Result<String, Self::Error> {
        self.text(i)?.ok_or_else(|| self.corrupt(i, "text"))
    }

    /// An integer column that is never NULL.
    fn required_int(&self, i: usize) -> Result<i64, Self::Error> {
        self.int(i)?.ok_or_else(|| self.corrupt(i, "an integer"))
    }
}

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;

    fn text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }

    fn int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }

    fn real(&self, i: usize) -> rusqlite::Result<f64> {
        self.get(i)
    }

    fn flag(&self, i: usize) -> rusqlite::Result<bool> {
        self.get(i)
    }

    fn corrupt(&self, i: usize, what: &str) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("not {what}").into(),
        )
    }
}

/// A stored value PostgreSQL returned that the reader refuses.
#[derive(Debug, thiserror::Error)]
#[error("column {column} is not {what}")]
pub struct BadColumn {
    pub column: usize,
    pub what: String,
}

/// Why a PostgreSQL row could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PgColumnError {
    #[error(transparent)]
    Sql(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Bad(#[from] BadColumn),
}

impl Columns for tokio_postgres::Row {
    type Error = PgColumnError;

    fn text(&self, i: usize) -> Result<Option<String>, PgColumnError> {
        Ok(self.try_get(i)?)
    }

    /// `BIGINT`, or `INTEGER` widened.
    fn int(&self, i: usize) -> Result<Option<i64>, PgColumnError> {
        match self.try_get::<_, Option<i64>>(i) {
            Ok(v) => Ok(v),
            Err(_) => Ok(self.try_get::<_, Option<i32>>(i)?.map(i64::from)),
        }
    }

    fn real(&self, i: usize) -> Result<f64, PgColumnError> {
        Ok(self.try_get(i)?)
    }

    fn flag(&self, i: usize) -> Result<bool, PgColumnError> {
        Ok(self.try_get(i)?)
    }

    fn corrupt(&self, i: usize, what: &str) -> PgColumnError {
        PgColumnError::Bad(BadColumn {
            column: i,
            what: what.to_owned(),
        })
    }
}
